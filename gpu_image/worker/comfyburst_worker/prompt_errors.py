"""ComfyUI's answers that fail a job, as the worker's errors: a rejected `/prompt` (its node
and message) and an `execution_error` websocket message."""

from __future__ import annotations

import logging
import re
from typing import Any

from comfyburst_worker.errors import ComfyUnavailable, ExecutionFailed, PromptRejected, WorkerError

log = logging.getLogger(__name__)

_NODE_IN_DETAILS = re.compile(r"Node ID '#([^']+)'")


def prompt_error(status: int, body: dict[str, Any], workflow: dict[str, Any]) -> WorkerError:
    if status >= 500 or not body:
        return ComfyUnavailable(f"ComfyUI answered /prompt with HTTP {status}")
    raw_error, raw_node_errors = body.get("error"), body.get("node_errors")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    node_errors: dict[str, Any] = raw_node_errors if isinstance(raw_node_errors, dict) else {}
    for node_id, entry in sorted(node_errors.items()):
        first = (entry.get("errors") or [{}])[0]
        detail = first.get("details")
        message = f"{first.get('message', 'invalid')}" + (f": {detail}" if detail else "")
        return PromptRejected(
            message,
            node_id=str(node_id),
            node_type=entry.get("class_type"),
            details={"error": error, "node_errors": node_errors},
        )
    message = str(error.get("message") or "ComfyUI rejected the workflow")
    if error.get("details"):
        message = f"{message}: {error['details']}"
    # `invalid_prompt` (unknown or missing class_type) names its node only in the details.
    match = _NODE_IN_DETAILS.search(str(error.get("details") or ""))
    named = match.group(1) if match else None
    node_type = None
    if named is not None and isinstance(workflow.get(named), dict):
        node_type = workflow[named].get("class_type")
    return PromptRejected(message, node_id=named, node_type=node_type, details={"error": error})


def execution_error(data: dict[str, Any]) -> ExecutionFailed:
    # The traceback stays in the agent's log; the job gets the node and the message.
    traceback = "".join(data.get("traceback") or [])
    log.error("execution_error in node %s: %s", data.get("node_id"), traceback)
    message = f"{data.get('exception_type', 'Error')}: {data.get('exception_message', '')}".strip()
    return ExecutionFailed(
        message,
        node_id=str(data["node_id"]) if data.get("node_id") is not None else None,
        node_type=data.get("node_type"),
        details={"executed": data.get("executed"), "exception_type": data.get("exception_type")},
    )
