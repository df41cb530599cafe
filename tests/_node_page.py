"""The stand-in page for the browser tests where no real ComfyUI is at hand (`make test`).

Not ComfyUI: an aiohttp server on a free loopback port that serves this package's real
extension (`comfy_node/web/js`) as ComfyUI does (`/extensions/<pack>/`), stand-ins of the two
frontend modules it imports (tests/_node_page/scripts/), and this package's real
`/comfyburst/queue` route, registered through `register_routes()` on a stand-in of ComfyUI's
`PromptServer`. The route talks to the local cloud's real API (pre-flight); the prompts it
queues on "this ComfyUI" are recorded by the stand-in `/prompt`. The real frontend is driven
by the same tests when COMFYUI_DIR is set (tests/test_comfy_node_browser.py).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from tests._e2e_support import REPO_ROOT

PAGE_DIR = Path(__file__).resolve().parent / "_node_page"
EXTENSION_DIR = REPO_ROOT / "comfy_node" / "web" / "js"
PACK_NAME = "ComfyBurst"
INDEX = f"""<!doctype html>
<html><head><title>ComfyBurst stand-in page</title></head>
<body style="background:#1e1e1e">
<script type="module">
  import {{ app }} from "/scripts/app.js";
  window.comfyAPI = {{ app: {{ app }} }};
  await import("/extensions/{PACK_NAME}/comfyburst.js");
  await app.setupExtensions();
</script>
</body></html>
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodePage:
    """The stand-in server, running in its own thread and event loop."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pack_of: Callable[[str], Path | None]):
        from comfy_node import _comfy, routes

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.queued: list[dict[str, Any]] = []  # the bodies POSTed to this "ComfyUI"'s /prompt
        table = web.RouteTableDef()
        server = SimpleNamespace(routes=table, port=self.port, address="127.0.0.1")
        monkeypatch.setattr(_comfy, "prompt_server", lambda: server)
        monkeypatch.setattr(_comfy, "serves_tls", lambda: False)
        monkeypatch.setattr(_comfy, "node_pack_folder", pack_of)
        assert routes.register_routes()
        ours = list(table)
        table.get("/")(self._index)
        table.post("/prompt")(self._prompt)
        for route in ours:  # ComfyUI serves every route under /api too
            assert isinstance(route, web.RouteDef)
            table.route(route.method, f"/api{route.path}")(route.handler)
        self._app = web.Application()
        self._app.add_routes(table)
        self._app.add_routes(
            [
                web.post("/api/prompt", self._prompt),
                web.static("/scripts", PAGE_DIR / "scripts"),
                web.static(f"/extensions/{PACK_NAME}", EXTENSION_DIR),
            ]
        )
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self._app)
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(30), "the stand-in page did not start"

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        started.set()
        self._loop.run_forever()

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=INDEX, content_type="text/html")

    async def _prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.queued.append(body)
        number = len(self.queued)
        return web.json_response(
            {"prompt_id": str(uuid.uuid4()), "number": number, "node_errors": {}}
        )

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
