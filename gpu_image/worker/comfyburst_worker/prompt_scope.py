"""Only the outputs pre-flight accepted run: the prompt is cut to them and their ancestors,
and ComfyUI's report of what ran is held against them. Pure.

A cut prompt rather than ComfyUI's `partial_execution_targets` (which the pinned ComfyUI
also takes): a refused branch then never reaches ComfyUI at all, not even its validation,
whichever ComfyUI (or stand-in) answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def linked_nodes(inputs: Any) -> list[str]:
    """The node ids a node's inputs link to (`[node_id, output_index]` values)."""
    if not isinstance(inputs, dict):
        return []
    return [
        str(value[0])
        for value in inputs.values()
        if isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    ]


def prune(workflow: dict[str, Any], accepted: Iterable[str]) -> dict[str, Any]:
    """The accepted output nodes and everything they depend on; the whole workflow when
    nothing was recorded as accepted (jobs from before pre-flight recorded it)."""
    stack = [str(node_id) for node_id in accepted]
    if not stack:
        return workflow
    keep: set[str] = set()
    while stack:
        node_id = stack.pop()
        if node_id in keep or node_id not in workflow:
            continue
        keep.add(node_id)
        node = workflow[node_id]
        stack.extend(linked_nodes(node.get("inputs") if isinstance(node, dict) else None))
    return {node_id: node for node_id, node in workflow.items() if node_id in keep}


def unaccepted(reported: Iterable[str], accepted: Iterable[str]) -> list[str]:
    """Nodes ComfyUI reports outputs of that pre-flight did not accept (none when it
    recorded no accepted outputs)."""
    allowed = set(accepted)
    if not allowed:
        return []
    return sorted(str(node_id) for node_id in reported if str(node_id) not in allowed)


# An input no node declares: ComfyUI keys its output cache on every input of a node, declared
# or not, but passes only declared ones to the node. With the job id here, an output node never
# replays an earlier job's cached result (whose files were emptied after that job: a /view 404),
# while the nodes upstream of it (model loaders, samplers) stay cached.
RUN_INPUT = "comfyburst_run"


def rerun_outputs(workflow: dict[str, Any], accepted: Iterable[str], run: str) -> dict[str, Any]:
    """A copy in which every output node (the accepted ones, else every node nothing links
    to) carries `RUN_INPUT = run`, so ComfyUI runs it again instead of replaying its cache."""
    outputs = {str(node_id) for node_id in accepted}
    if not outputs:
        linked = {
            upstream
            for node in workflow.values()
            if isinstance(node, dict)
            for upstream in linked_nodes(node.get("inputs"))
        }
        outputs = {node_id for node_id in workflow if node_id not in linked}
    fresh: dict[str, Any] = {}
    for node_id, node in workflow.items():
        if node_id in outputs and isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            node = {**node, "inputs": {**node["inputs"], RUN_INPUT: run}}
        fresh[node_id] = node
    return fresh
