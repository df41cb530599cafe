"""The HTTP API: routing, auth, error mapping and the OpenAPI document."""

from comfyburst.api._deps import ApiDeps, build_api_deps
from comfyburst.api._routes import handle

__all__ = ["ApiDeps", "build_api_deps", "handle"]
