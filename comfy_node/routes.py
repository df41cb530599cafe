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

from . import _comfy
from ._vendor.comfyburst_core.client import ApiError
from ._vendor.comfyburst_core.errors import ComfyBurstError
from .config import make_client
from .environments import EnvironmentRefused, environment_for, environment_notice
from .local_models import without_bringable
from .missing_nodes import (
    as_comfy_rejection,
    describe_missing,
    local_pack,
    missing_node_types,
    unknown_node_id,
)
from .outputs import makes_images

RUN_NODE_ID = "comfyburst_run"
SAVE_NODE_ID = "comfyburst_save"


def wrap_for_queue(
    prompt: dict[str, Any], models: list[dict[str, Any]], environment: str | None = None
) -> dict[str, Any]:
    """The local prompt that runs `prompt` remotely (in `environment`, once it is built) and
    saves what comes back."""
    run_inputs: dict[str, Any] = {"workflow": json.dumps(prompt)}
    if environment:
        run_inputs["environment"] = environment
    if models:
        run_inputs["models"] = [f"{RUN_NODE_ID}_models", 0]
    wrapper: dict[str, Any] = {
        RUN_NODE_ID: {"class_type": "ComfyBurstRunWorkflow", "inputs": run_inputs},
    }
    if makes_images(prompt):
        # Images come back into ComfyUI's own history; other files are saved by the run node.
        wrapper[SAVE_NODE_ID] = {
            "class_type": "SaveImage",
            "inputs": {"images": [RUN_NODE_ID, 0], "filename_prefix": "ComfyBurst"},
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
    """The API's request rejection in the shape ComfyUI's frontend shows on the nodes."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    comfy_error = exc.comfy_error or {
        "type": error.get("code", "comfyburst_error"),
        "message": error.get("message", str(exc)),
        "details": "",
        "extra_info": {},
    }
    return {"error": comfy_error, "node_errors": exc.node_errors}


def verdict_rejection(verdict: dict[str, Any]) -> dict[str, Any] | None:
    """ComfyUI's `/prompt` rejection for a pre-flight verdict that cannot run; None if it can
    (a partly valid workflow runs its valid outputs, as on ComfyUI)."""
    if verdict.get("valid"):
        return None
    error = verdict.get("error") or {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    }
    return {"error": error, "node_errors": verdict.get("node_errors") or {}}


def queue_payload(body: dict[str, Any], environment: str | None = None) -> dict[str, Any]:
    """The local `/prompt` body for a "Queue on GPU" request."""
    prompt = wrap_for_queue(body["prompt"], body.get("models") or [], environment)
    payload: dict[str, Any] = {"prompt": prompt}
    if body.get("client_id"):
        payload["client_id"] = body["client_id"]
    if isinstance(body.get("workflow"), dict):
        # Saved images carry the editor's graph, so dropping one on ComfyUI loads that graph.
        payload["extra_data"] = {"extra_pnginfo": {"workflow": body["workflow"]}}
    return payload


def local_prompt_url(address: str | None, port: int, tls: bool) -> str:
    """This ComfyUI's own `/prompt`, reached the shortest way from inside the server."""
    host = address or "127.0.0.1"
    if host in ("0.0.0.0", "::") or "," in host:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/prompt"


def _error(status: int, kind: str, message: str) -> Any:
    from aiohttp import web

    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


def register_routes() -> bool:
    """Add the routes to ComfyUI's server; False outside ComfyUI."""
    instance = _comfy.prompt_server()
    if instance is None:
        return False
    from aiohttp import ClientSession, web

    @instance.routes.post("/comfyburst/queue")
    async def queue_on_gpu(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "invalid_json", "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict):
            return _error(400, "no_prompt", "send the graph (API format) as 'prompt'")
        if not body["prompt"]:
            return _error(400, "no_prompt", "the graph is empty")
        try:
            client = make_client()
            request_body = {"workflow": body["prompt"], "models": body.get("models") or []}
            verdict = await asyncio.to_thread(client.validate, request_body)
            # Model files only this ComfyUI has are brought by the run node: not an error.
            verdict = without_bringable(verdict, _comfy.local_model_file)
        except ApiError as exc:
            return web.json_response(rejection_as_comfy_error(exc), status=400)
        except ComfyBurstError as exc:
            return _error(400, "comfyburst_config", exc.message)
        rejection = verdict_rejection(verdict)
        environment: dict[str, Any] | None = None
        if rejection is not None and unknown_node_id(verdict.get("error")) is not None:
            # Node types the GPU lacks: the environment of their local packs brings them, or
            # each is named with its pack and the reason, before any GPU starts.
            missing = await asyncio.to_thread(
                missing_node_types, client.validate, request_body, verdict.get("error")
            )
            try:
                environment = await asyncio.to_thread(environment_for, client, missing, local_pack)
                rejection, verdict = None, {}
            except EnvironmentRefused as refused:
                message = describe_missing(missing, local_pack, str(refused))
                rejection = as_comfy_rejection(message, missing, body["prompt"])
        if rejection is not None:
            return web.json_response(rejection, status=400)
        env_id = str(environment["id"]) if environment is not None else None
        url = local_prompt_url(
            getattr(instance, "address", None), instance.port, _comfy.serves_tls()
        )
        async with (
            ClientSession() as session,
            session.post(url, json=queue_payload(body, env_id), ssl=False) as answer,
        ):
            queued = await answer.json()
        if answer.status == 200 and environment is not None:
            # The browser says so while the run node waits for the build.
            queued["comfyburst_environment"] = environment_notice(environment)
        if answer.status == 200 and verdict.get("node_errors"):
            # Outputs that will not run remotely: shown on their nodes, as ComfyUI does.
            queued["node_errors"] = verdict["node_errors"]
        return web.json_response(queued, status=answer.status)

    return True
