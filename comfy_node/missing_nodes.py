"""Node types the GPU image lacks, found before any GPU starts, each named with the local
custom-node pack it comes from (its git remote and commit)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import _comfy
from ._vendor.comfyburst_core.client import ApiError
from ._vendor.comfyburst_core.custom_nodes import Pack, read_pack

# ComfyUI's words (and so the API's pre-flight) for a class_type it does not have.
_UNKNOWN_DETAILS = re.compile(r"^Node ID '#(?P<node_id>.+)'$")
ERROR_TYPE = "comfyburst_missing_node_types"

Validate = Callable[[dict[str, Any]], dict[str, Any]]


def unknown_node_id(error: Any) -> str | None:
    """The node id of a "node X does not exist" rejection; None for any other error."""
    if not isinstance(error, dict) or error.get("type") != "invalid_prompt":
        return None
    if not str(error.get("message", "")).endswith("does not exist."):
        return None
    match = _UNKNOWN_DETAILS.match(str(error.get("details", "")))
    return match["node_id"] if match else None


def missing_node_types(validate: Validate, request: dict[str, Any], error: Any) -> list[str]:
    """Every node type of the workflow the GPU lacks, in the order the pre-flight finds them.

    The pre-flight, like ComfyUI, names only the first unknown node; this asks again without
    the types already found (one request per missing type) until no unknown type is left."""
    graph: dict[str, Any] = dict(request.get("workflow") or {})
    missing: list[str] = []
    for _ in range(len(graph)):
        node_id = unknown_node_id(error)
        node = graph.get(node_id) if node_id is not None else None
        if not isinstance(node, dict):
            break
        class_type = str(node.get("class_type"))
        missing.append(class_type)
        graph = {k: v for k, v in graph.items() if v.get("class_type") != class_type}
        if not graph:
            break
        try:
            verdict = validate({**request, "workflow": graph})
        except ApiError:
            break
        if verdict.get("valid"):
            break
        error = verdict.get("error")
    return missing


def local_pack(class_type: str) -> Pack | None:
    """The pack this ComfyUI loaded `class_type` from, as git describes it."""
    folder = _comfy.node_pack_folder(class_type)
    return read_pack(folder) if folder is not None else None


BAKE_ADVICE = (
    "Add their packs to gpu_image/custom_nodes.txt "
    "(`comfyburst image nodes --from-comfyui DIR`) and bake the GPU image again."
)


def describe_missing(
    missing: list[str], pack_of: Callable[[str], Pack | None], advice: str = BAKE_ADVICE
) -> str:
    """The message shown in ComfyUI: each type, the local pack it comes from, what to do."""
    lines = ["The ComfyBurst GPU image lacks node types this workflow uses:"]
    for class_type in missing:
        pack = pack_of(class_type)
        source = f"from {pack.describe()}" if pack else "not from a custom-node pack found here"
        lines.append(f"  {class_type}: {source}")
    lines.append(advice)
    return "\n".join(lines)


def as_comfy_rejection(
    message: str, missing: list[str], workflow: dict[str, Any]
) -> dict[str, Any]:
    """ComfyUI's `/prompt` rejection shape, marking every node of a missing type.

    ComfyUI's frontend shows `message: details`, then each node's `message: details`: the
    headline and the list go once into the error, each node gets its own type's source."""
    headline, _, listing = message.partition("\n")
    sources = {
        class_type: line.strip()[len(class_type) + 2 :]
        for line in listing.splitlines()
        for class_type in missing
        if line.strip().startswith(f"{class_type}: ")
    }
    node_errors = {
        node_id: {
            "errors": [
                {
                    "type": ERROR_TYPE,
                    "message": f"{node['class_type']} is not on the GPU image",
                    "details": sources.get(node["class_type"], ""),
                    "extra_info": {},
                }
            ],
            "dependent_outputs": [],
            "class_type": node["class_type"],
        }
        for node_id, node in workflow.items()
        if isinstance(node, dict) and node.get("class_type") in missing
    }
    error = {
        "type": ERROR_TYPE,
        "message": headline.rstrip(":"),
        "details": listing,
        "extra_info": {"missing_node_types": missing},
    }
    return {"error": error, "node_errors": node_errors}
