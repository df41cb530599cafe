"""The package's server routes inside ComfyUI: "Queue on GPU" from the browser.

The browser sends the whole graph (API format) here; this side holds the credentials,
asks the ComfyBurst API for a pre-flight verdict, and queues a two-node prompt on this
ComfyUI (Run workflow on GPU → SaveImage), so progress and the returned images show in
ComfyUI's own queue and history panels.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from comfyburst.client import ApiError
from comfyburst.errors import ComfyBurstError

RUN_NODE_ID = "comfyburst_run"
SAVE_NODE_ID = "comfyburst_save"


def wrap_for_queue(prompt: dict[str, Any], models: list[dict[str, Any]]) -> dict[str, Any]:
    """The local prompt that runs `prompt` remotely and saves what comes back."""
    run_inputs: dict[str, Any] = {"workflow": json.dumps(prompt)}
    if models:
        run_inputs["models"] = [f"{RUN_NODE_ID}_models", 0]
    wrapper: dict[str, Any] = {
        RUN_NODE_ID: {"class_type": "ComfyBurstRunWorkflow", "inputs": run_inputs},
        SAVE_NODE_ID: {
            "class_type": "SaveImage",
            "inputs": {"images": [RUN_NODE_ID, 0], "filename_prefix": "ComfyBurst"},
        },
    }
    previous: list[Any] | None = None
    for index, model in enumerate(models):
        node_id = f"{RUN_NODE_ID}_models" if index == len(models) - 1 else f"{RUN_NODE_ID}_m{index}"
        inputs: dict[str, Any] = {
            "kind": model["kind"],
            "url": model["url"],
            "filename": model.get("filename", ""),
            "sha256": model.get("sha256", ""),
        }
        if previous is not None:
            inputs["models"] = previous
        wrapper[node_id] = {"class_type": "ComfyBurstModelFromURL", "inputs": inputs}
        previous = [node_id, 0]
    return wrapper


def rejection_as_comfy_error(exc: ApiError) -> dict[str, Any]:
    """The API's pre-flight rejection in the shape ComfyUI's frontend shows on the nodes."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    details = error.get("details") if isinstance(error.get("details"), dict) else None
    comfy_error = details or {
        "type": error.get("code", "comfyburst_error"),
        "message": error.get("message", str(exc)),
        "details": "",
        "extra_info": {},
    }
    return {"error": comfy_error, "node_errors": exc.node_errors}


def register_routes() -> bool:
    """Add the routes to ComfyUI's server; False outside ComfyUI."""
    try:
        from aiohttp import ClientSession, web
        from server import PromptServer
    except ImportError:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return False

    from .nodes import make_client

    @instance.routes.post("/comfyburst/queue")
    async def queue_on_gpu(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response(
                {"error": {"type": "invalid_json", "message": "bad JSON"}}, status=400
            )
        prompt, models = body.get("prompt"), body.get("models") or []
        if not isinstance(prompt, dict) or not prompt:
            return web.json_response(
                {"error": {"type": "no_prompt", "message": "send the graph as 'prompt'"}},
                status=400,
            )
        try:
            client = make_client()
            await asyncio.to_thread(client.validate, {"workflow": prompt, "models": models})
        except ApiError as exc:
            return web.json_response(rejection_as_comfy_error(exc), status=400)
        except ComfyBurstError as exc:
            return web.json_response(
                {"error": {"type": "config", "message": exc.message}}, status=400
            )
        local = f"http://127.0.0.1:{instance.port}/prompt"
        payload = {"prompt": wrap_for_queue(prompt, models), "client_id": body.get("client_id")}
        async with ClientSession() as session, session.post(local, json=payload) as answer:
            return web.json_response(await answer.json(), status=answer.status)

    return True
