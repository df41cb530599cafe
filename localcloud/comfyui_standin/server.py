"""Run the ComfyUI stand-in in a background thread (for tests and the local cloud)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path

from aiohttp import web

from ._custom_nodes import load_custom_nodes
from ._layer import activate, read_layer
from ._paths import Dirs
from ._validation import Validator, preflight_validator
from .app import build_app, start
from .faults import Faults

_START_TIMEOUT_S = 30.0


class StandinServer:
    """`StandinServer(input_dir=…, output_dir=…, temp_dir=…).start()` → base URL; `.stop()`.

    With `layer_file`, each `start()` reads the active layer file again (its packs, its
    site-packages put on this process's import path, its environment id), so `stop()` then
    `start()` is a restart on the same port."""

    def __init__(
        self,
        input_dir: str | Path,
        output_dir: str | Path,
        temp_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        validator: Validator = preflight_validator,
        preview_method: str = "none",
        custom_nodes_dirs: tuple[str | Path, ...] = (),
        layer_file: str | Path | None = None,
    ) -> None:
        self.dirs = Dirs.create(input_dir, output_dir, temp_dir)
        self._custom_nodes_dirs = custom_nodes_dirs
        self._layer_file = layer_file
        self.host, self.port = host, port
        self._faults, self._validator = faults, validator
        self._preview_method = preview_method
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self) -> str:
        """Start listening; returns e.g. `http://127.0.0.1:43121`."""
        ready: Future[int] = Future()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="comfyui-standin", daemon=True
        )
        self._thread.start()
        self.port = ready.result(timeout=_START_TIMEOUT_S)
        self.base_url = f"http://{self.host}:{self.port}"
        return self.base_url

    def _serve(self, ready: Future[int]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            layer = read_layer(self._layer_file)
            app = build_app(
                self.dirs,
                self._faults,
                self._validator,
                self._preview_method,
                load_custom_nodes([*self._custom_nodes_dirs, *activate(layer)]),
                layer.environment_id,
            )
            self._runner, port = loop.run_until_complete(start(app, self.host, self.port))
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(port)
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_START_TIMEOUT_S)
        self._loop = self._thread = None

    def __enter__(self) -> StandinServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
