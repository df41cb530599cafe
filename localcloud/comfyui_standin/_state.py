"""The stand-in's wiring: directories, queue, history, websocket hub, executor and faults."""

from __future__ import annotations

import copy
import json
import uuid
from importlib import resources
from typing import Any

from aiohttp import web

from ._custom_nodes import CustomNodes
from ._logs import LogBuffer
from ._paths import Dirs, loadable_names, top_level_inputs
from ._validation import Validator, Verdict
from .executor import Executor
from .faults import Faults
from .history import History
from .prompt_queue import PromptQueue
from .ws_hub import WsHub


def _load_object_info() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("object_info.json").read_text("utf-8")
    return json.loads(text)


class Standin:
    """Everything one stand-in server holds; built inside the server's event loop."""

    def __init__(
        self,
        dirs: Dirs,
        faults: Faults,
        validator: Validator,
        preview_method: str = "none",
        custom_nodes: CustomNodes | None = None,
        environment_id: str | None = None,
    ) -> None:
        self.dirs = dirs
        self.faults = faults
        self.validator = validator
        core = _load_object_info()
        custom = (custom_nodes or CustomNodes()).without(core)
        self._object_info = {**core, **custom.object_info}
        # Which environment this start loaded, and an id of this start (a restart's is new).
        self.boot_id = uuid.uuid4().hex
        self.environment_id = environment_id
        self.packs_loaded, self.packs_failed = list(custom.loaded), list(custom.failed)
        self.hub = WsHub(lambda: self.queue.remaining(), lambda: self.faults)
        self.queue = PromptQueue(on_change=self.broadcast_status)
        self.history = History()
        self.logs = LogBuffer()
        self.executor = Executor(
            self.queue,
            self.history,
            self.hub,
            dirs,
            self.object_info,
            lambda: self.faults,
            preview_method,
            custom.functions,
            logs=self.logs,
        )

    def boot(self) -> dict[str, Any]:
        """This start's facts (`/system_stats` `system.standin_boot`, stand-in only)."""
        return {
            "boot_id": self.boot_id,
            "environment_id": self.environment_id,
            "custom_nodes_loaded": list(self.packs_loaded),
            "custom_nodes_failed": list(self.packs_failed),
        }

    def broadcast_status(self) -> None:
        """Tell every socket how many prompts remain."""
        self.hub.broadcast("status", self.hub.status_data())

    def object_info(self) -> dict[str, Any]:
        """The served `/object_info`; LoadImage lists the top-level input files."""
        info = copy.deepcopy(self._object_info)
        info["LoadImage"]["input"]["required"]["image"][0] = top_level_inputs(self.dirs)
        return info

    def validate(self, prompt: Any) -> Verdict:
        """Run the shared validator against this server's nodes and files."""
        return self.validator(prompt, self.object_info(), loadable_names(self.dirs))

    def set_faults(self, faults: Faults) -> None:
        """Replace the active fault set."""
        self.faults = faults
        self.hub.reset_drops()


STANDIN_KEY = web.AppKey("standin", Standin)
