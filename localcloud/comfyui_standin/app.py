"""Builds and starts the ComfyUI stand-in's aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ._custom_nodes import CustomNodes
from ._paths import Dirs
from ._state import STANDIN_KEY, Standin
from ._validation import Validator, preflight_validator
from .faults import Faults
from .routes import add_routes

log = logging.getLogger("localcloud.comfyui_standin")

MAX_UPLOAD_BYTES = 104_857_600
STARTUP_LOG_LINE = "ComfyUI STAND-IN (not ComfyUI)"


def build_app(
    dirs: Dirs,
    faults: Faults | None = None,
    validator: Validator = preflight_validator,
    preview_method: str = "none",
    custom_nodes: CustomNodes | None = None,
    environment_id: str | None = None,
) -> web.Application:
    """The application; its executor task runs from startup to cleanup. A preview method
    other than `none` makes the sampler send preview frames (previews.py). `environment_id`
    names the layer whose packs `custom_nodes` holds (None: the base environment)."""
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
    standin = Standin(
        dirs, faults or Faults(), validator, preview_method, custom_nodes, environment_id
    )
    app[STANDIN_KEY] = standin
    add_routes(app, standin)

    async def executor_task(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(standin.executor.run_forever(), name="standin-executor")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_sockets(app: web.Application) -> None:
        await standin.hub.close_all()

    app.cleanup_ctx.append(executor_task)
    app.on_shutdown.append(close_sockets)
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on host:port (0 = any free port); returns the runner and the real port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    real_port = runner.addresses[0][1]
    standin = app[STANDIN_KEY]
    log.warning(
        "%s listening on http://%s:%d (input %s, output %s, temp %s)",
        STARTUP_LOG_LINE, host, real_port, standin.dirs.input, standin.dirs.output,
        standin.dirs.temp,
    )  # fmt: skip
    return runner, real_port
