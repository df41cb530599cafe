"""Stand-in-only admin routes: `GET|POST|DELETE /_standin/faults`."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import ValidationError

from ._state import STANDIN_KEY
from .faults import Faults


def _faults_response(faults: Faults) -> web.Response:
    return web.json_response(faults.model_dump(mode="json"))


async def get_faults(request: web.Request) -> web.Response:
    """The active fault set."""
    return _faults_response(request.app[STANDIN_KEY].faults)


async def set_faults(request: web.Request) -> web.Response:
    """Replace the fault set with the posted JSON; 400 with pydantic's errors when invalid."""
    try:
        faults = Faults.model_validate_json(await request.text())
    except ValidationError as exc:
        errors = json.loads(exc.json(include_url=False))
        return web.json_response({"error": "invalid faults", "details": errors}, status=400)
    request.app[STANDIN_KEY].set_faults(faults)
    return _faults_response(faults)


async def clear_faults(request: web.Request) -> web.Response:
    """Back to no faults."""
    request.app[STANDIN_KEY].set_faults(Faults())
    return _faults_response(Faults())


def add_routes(app: web.Application) -> None:
    """Register the admin routes (root only, never under /api)."""
    app.router.add_get("/_standin/faults", get_faults)
    app.router.add_post("/_standin/faults", set_faults)
    app.router.add_delete("/_standin/faults", clear_faults)
