"""HTTP routes of the ComfyUI stand-in (each also served under `/api`)."""

from __future__ import annotations

import json
import os
import platform
import sys
import uuid
from typing import Any

from aiohttp import web

from . import _admin, _files, _logs
from ._graph import coerce_numbers
from ._state import STANDIN_KEY, Standin
from .prompt_queue import QueueItem
from .ws_hub import SERVER_FEATURES

STANDIN_VERSION = "0.3.64-standin"
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models",
    "clip_vision", "style_models", "embeddings", "diffusers", "vae_approx", "controlnet",
    "gligen", "upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders",
]  # fmt: skip
# aiohttp's own text for an unhandled error, which is what the real server answers.
_SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"


def _standin(request: web.Request) -> Standin:
    return request.app[STANDIN_KEY]


async def _json_body(request: web.Request) -> Any:
    """The JSON body, or None when there is none or it does not parse."""
    if not request.can_read_body:
        return None
    try:
        return json.loads(await request.text())
    except ValueError:
        return None


def _ok() -> web.Response:
    return web.Response(status=200)


async def system_stats(request: web.Request) -> web.Response:
    """Machine facts; says plainly that this is the stand-in."""
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    free = os.sysconf("SC_AVPHYS_PAGES") * page_size
    total = pages * page_size
    system = {
        "os": os.name,
        "ram_total": total,
        "ram_free": free,
        "comfyui_version": STANDIN_VERSION,
        "standin": "ComfyBurst ComfyUI STAND-IN (not ComfyUI): image-only core nodes, Pillow",
        "python_version": sys.version,
        "pytorch_version": "none (stand-in)",
        "embedded_python": False,
        "argv": sys.argv,
        # Stand-in only: this start's id and the environment (layer) it loaded.
        "standin_boot": _standin(request).boot(),
    }
    device = {
        "name": f"cpu ({platform.machine()}, ComfyUI stand-in)",
        "type": "cpu",
        "index": None,
        "vram_total": total,
        "vram_free": free,
        "torch_vram_total": total,
        "torch_vram_free": free,
    }
    return web.json_response({"system": system, "devices": [device]})


async def object_info(request: web.Request) -> web.Response:
    """Every implemented node class."""
    return web.json_response(_standin(request).object_info())


async def object_info_one(request: web.Request) -> web.Response:
    """One node class, or `{}` when unknown."""
    name = request.match_info["node_class"]
    info = _standin(request).object_info()
    return web.json_response({name: info[name]} if name in info else {})


async def get_queue(request: web.Request) -> web.Response:
    """Running and pending prompts."""
    return web.json_response(_standin(request).queue.snapshot())


async def get_prompt(request: web.Request) -> web.Response:
    """`{"exec_info": {"queue_remaining": n}}`."""
    return web.json_response(_standin(request).hub.status_data()["status"])


async def post_prompt(request: web.Request) -> web.Response:
    """Validate and enqueue a prompt."""
    standin = _standin(request)
    standin.logs.line("got prompt")  # first, as the real server prints it for every POST
    body = await _json_body(request)
    if not isinstance(body, dict):
        return web.Response(status=500, text=_SERVER_ERROR_TEXT)
    number = body.get("number")
    if not isinstance(number, int | float) or isinstance(number, bool):
        number = standin.queue.next_number(front=bool(body.get("front")))
    if "prompt" not in body:
        error: dict[str, Any] = {"type": "no_prompt", "message": "No prompt provided"}
        error |= {"details": "No prompt provided", "extra_info": {}}
        return web.json_response({"error": error, "node_errors": {}}, status=400)
    verdict = standin.validate(body["prompt"])
    if not verdict.accepted:
        return web.json_response(verdict.body, status=verdict.http_status)
    prompt_id = str(body.get("prompt_id") or uuid.uuid4())
    extra_data = dict(body.get("extra_data") or {})
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    prompt = coerce_numbers(body["prompt"], standin.object_info())
    item = QueueItem(number, prompt_id, prompt, extra_data, verdict.outputs_to_execute)
    standin.queue.put(item)
    node_errors = verdict.body.get("node_errors", {})
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})


async def post_queue(request: web.Request) -> web.Response:
    """`{"clear": true}` and/or `{"delete": [ids]}` on pending prompts."""
    body = await _json_body(request) or {}
    queue = _standin(request).queue
    if body.get("clear"):
        queue.clear()
    if isinstance(body.get("delete"), list):
        queue.delete([str(i) for i in body["delete"]])
    return _ok()


async def post_interrupt(request: web.Request) -> web.Response:
    """Interrupt whatever runs, or only the given `prompt_id` if it is the one running."""
    body = await _json_body(request)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    _standin(request).executor.interrupt(str(prompt_id) if prompt_id else None)
    return _ok()


async def get_history(request: web.Request) -> web.Response:
    """All history, or the newest `max_items`."""
    raw = request.query.get("max_items")
    max_items = int(raw) if raw and raw.lstrip("-").isdigit() else None
    return web.json_response(_standin(request).history.latest(max_items))


async def get_history_one(request: web.Request) -> web.Response:
    """One prompt's history, or `{}`."""
    return web.json_response(_standin(request).history.get(request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.Response:
    """`{"clear": true}` and/or `{"delete": [ids]}`."""
    body = await _json_body(request) or {}
    history = _standin(request).history
    if body.get("clear"):
        history.clear()
    if isinstance(body.get("delete"), list):
        history.delete([str(i) for i in body["delete"]])
    return _ok()


async def post_free(request: web.Request) -> web.Response:
    """`free_memory` drops cached node outputs; there are no models to unload."""
    body = await _json_body(request) or {}
    if body.get("free_memory"):
        _standin(request).executor.free()
    return _ok()


async def features(request: web.Request) -> web.Response:
    """Server feature flags."""
    return web.json_response(SERVER_FEATURES)


async def models(request: web.Request) -> web.Response:
    """Model folder names (all empty in the stand-in)."""
    return web.json_response(MODEL_FOLDERS)


async def models_in_folder(request: web.Request) -> web.Response:
    """No model files; unknown folders are 404."""
    if request.match_info["folder"] not in MODEL_FOLDERS:
        return web.Response(status=404, text="Folder not found")
    return web.json_response([])


async def empty_list(request: web.Request) -> web.Response:
    """`/embeddings` and `/extensions`: nothing installed."""
    return web.json_response([])


def add_routes(app: web.Application, standin: Standin) -> None:
    """Register every route at `/` and under `/api`, plus the stand-in admin routes."""
    table = [
        ("GET", "/ws", standin.hub.handle),
        ("GET", "/system_stats", system_stats),
        ("GET", "/object_info", object_info),
        ("GET", "/object_info/{node_class}", object_info_one),
        ("GET", "/queue", get_queue),
        ("POST", "/queue", post_queue),
        ("GET", "/prompt", get_prompt),
        ("POST", "/prompt", post_prompt),
        ("POST", "/interrupt", post_interrupt),
        ("GET", "/history", get_history),
        ("GET", "/history/{prompt_id}", get_history_one),
        ("POST", "/history", post_history),
        ("POST", "/free", post_free),
        ("GET", "/view", _files.view),
        ("POST", "/upload/image", _files.upload_image),
        ("GET", "/features", features),
        ("GET", "/models", models),
        ("GET", "/models/{folder}", models_in_folder),
        ("GET", "/embeddings", empty_list),
        ("GET", "/extensions", empty_list),
    ]
    for prefix in ("", "/api"):
        for method, path, handler in table:
            app.router.add_route(method, prefix + path, handler)
    _admin.add_routes(app)
    _logs.add_routes(app, standin.logs)
