"""Every error becomes a response here, and only here: status, bounded body, headers."""

from __future__ import annotations

import logging
from typing import Any

from comfyburst.domain.json_safety import bounded_mapping, clip_to, json_size
from comfyburst.errors import ComfyBurstError, Contended, NotFound, PreflightRejected, QueueFull

logger = logging.getLogger(__name__)

INTERNAL_BODY = {"error": {"code": "internal", "message": "internal error"}}
# No answer is larger than a small multiple of its request, nor than 1 MiB.
MAX_ANSWER_BYTES = 1024 * 1024
MIN_ANSWER_BUDGET_BYTES = 16 * 1024
ANSWER_GROWTH = 2


class MethodNotAllowed(ComfyBurstError):
    code = "method_not_allowed"
    http_status = 405


class RouteNotFound(NotFound):
    """No route for this path."""


def error_response(
    exc: BaseException, *, budget_bytes: int = MAX_ANSWER_BYTES, **log_fields: Any
) -> tuple[int, dict[str, Any]]:
    """Status and body (at most `budget_bytes` of JSON) for an exception; unexpected ones are
    logged with their traceback."""
    if isinstance(exc, ComfyBurstError) and exc.http_status < 500:
        return exc.http_status, _bounded(exc, budget_bytes)
    # A 5xx: the caller gets a generic body, the log gets the traceback.
    logger.error("request failed: %s", type(exc).__name__, exc_info=exc, extra=log_fields)
    if isinstance(exc, ComfyBurstError):
        return exc.http_status, {"error": {"code": exc.code, "message": "service unavailable"}}
    return 500, INTERNAL_BODY


def error_headers(exc: BaseException) -> dict[str, str]:
    """Headers an error answer carries: Allow on a 405, Retry-After on a contended update and
    on a full queue."""
    if isinstance(exc, MethodNotAllowed) and isinstance(exc.details, dict):
        return {"Allow": ", ".join(exc.details["allow"])}
    if isinstance(exc, Contended | QueueFull):
        return {"Retry-After": str(exc.retry_after_s)}
    return {}


def _bounded(exc: ComfyBurstError, budget_bytes: int) -> dict[str, Any]:
    body = exc.to_body()
    if json_size(body) <= budget_bytes:
        return body
    if isinstance(exc, PreflightRejected):
        # Keep ComfyUI's shape: whole node entries, clipped, as many as fit, and a count.
        error = clip_to(body["error"], budget_bytes // 4)
        node_errors, omitted = bounded_mapping(
            exc.node_errors, budget_bytes - json_size(error) - 256
        )
        return {"error": error, "node_errors": node_errors, "node_errors_omitted": omitted}
    clipped = clip_to(body, budget_bytes)
    if isinstance(clipped, dict):
        return clipped
    return {"error": {"code": exc.code, "message": "error details did not fit the answer"}}
