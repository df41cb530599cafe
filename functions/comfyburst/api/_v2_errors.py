"""Comfy API v2's error envelope over our errors: `{"error": {code, message, details}}`.

Our errors keep their meaning; only the code (and for a few the status) follow the contract:
unauthenticated -> 401 `unauthorized`, any refusal of who calls -> 403 `forbidden`, an unknown
or another caller's resource -> 404 `not_found`, a full per-caller queue -> 429 `queue_full`
(Retry-After from error_headers), pre-flight's verdict -> 422 `invalid_workflow` with the node
errors in `details`, a reused Idempotency-Key -> 422 `idempotency_key_reuse`, a body that is
not JSON -> 400 `invalid_request` (`details.reason` `invalid_json`), and any 5xx ->
`upstream_error` with a generic message (the log keeps the traceback).
"""

from __future__ import annotations

from typing import Any

from comfyburst.api._errors import error_response
from comfyburst.domain.json_safety import bounded_mapping, clip_to
from comfyburst.errors import (
    ComfyBurstError,
    Forbidden,
    IdempotencyConflict,
    InvalidJson,
    InvalidRequest,
    NotFound,
    PreflightRejected,
    Unauthenticated,
)

MAX_MESSAGE_CHARS = 2000


class V2Error(ComfyBurstError):
    """A refusal only v2 makes (its own code and status)."""

    def __init__(self, code: str, http_status: int, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.code = code
        self.http_status = http_status


class NotImplementedHere(V2Error):
    def __init__(self, message: str) -> None:
        super().__init__("not_implemented", 501, message)


def error_answer(
    exc: BaseException, *, budget_bytes: int, **log_fields: Any
) -> tuple[int, dict[str, Any]]:
    """Status and v2 envelope for an exception (5xx logged by error_response)."""
    if isinstance(exc, NotImplementedHere):
        return exc.http_status, _envelope(exc.code, exc.message, None)
    status, _body = error_response(exc, budget_bytes=budget_bytes, **log_fields)
    if status >= 500 or not isinstance(exc, ComfyBurstError):
        return status, _envelope("upstream_error", "the request could not be completed", None)
    code, status = _code_of(exc, status)
    details: dict[str, Any] = {}
    if isinstance(exc, PreflightRejected):
        node_errors, omitted = bounded_mapping(exc.node_errors, budget_bytes - 4096)
        details = {"node_errors": node_errors, "node_errors_omitted": omitted}
    else:
        if exc.field is not None:
            details["field"] = exc.field
        if exc.details is not None:
            clipped = clip_to(exc.details, budget_bytes // 2)
            details.update(clipped if isinstance(clipped, dict) else {"errors": clipped})
        if code != exc.code:
            details["reason"] = exc.code  # ours, finer than the contract's code
    return status, _envelope(code, exc.message, details or None)


def _code_of(exc: ComfyBurstError, status: int) -> tuple[str, int]:
    if isinstance(exc, V2Error):
        return exc.code, exc.http_status
    if isinstance(exc, Unauthenticated):
        return "unauthorized", 401
    if isinstance(exc, Forbidden):
        return "forbidden", 403
    if isinstance(exc, NotFound):
        return "not_found", 404
    if isinstance(exc, PreflightRejected):
        return "invalid_workflow", 422
    if isinstance(exc, IdempotencyConflict):
        return "idempotency_key_reuse", 422
    if isinstance(exc, InvalidRequest) and (exc.field or "").startswith("workflow"):
        return "invalid_workflow", 422
    if isinstance(exc, InvalidJson):
        # The contract has no `invalid_json`: its code for a body it cannot take is this one.
        return "invalid_request", 400
    return exc.code, status


def _envelope(code: str, message: str, details: dict[str, Any] | None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message[:MAX_MESSAGE_CHARS]}
    if details is not None:
        error["details"] = details
    return {"error": error}
