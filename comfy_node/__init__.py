"""ComfyBurst nodes for ComfyUI: send work to a GPU from the graph, get images back into it."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .routes import register_routes

# Inside ComfyUI the server exists by the time custom nodes load; outside it this is a no-op.
register_routes()

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
