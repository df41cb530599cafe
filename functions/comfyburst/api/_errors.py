"""Every error becomes a response here, and only here."""

from __future__ import annotations

import logging
from typing import Any

from comfyburst.errors import ComfyBurstError, NotFound

logger = logging.getLogger(__name__)

INTERNAL_BODY = {"error": {"code": "internal", "message": "internal error"}}


class MethodNotAllowed(ComfyBurstError):
    code = "method_not_allowed"
    http_status = 405


class RouteNotFound(NotFound):
    """No route for this path."""


def error_response(exc: BaseException, **log_fields: Any) -> tuple[int, dict[str, Any]]:
    """Status and body for an exception; unexpected ones are logged with their traceback."""
    if isinstance(exc, ComfyBurstError) and exc.http_status < 500:
        return exc.http_status, exc.to_body()
    # A 5xx: the caller gets a generic body, the log gets the traceback.
    logger.error("request failed: %s", type(exc).__name__, exc_info=exc, extra=log_fields)
    if isinstance(exc, ComfyBurstError):
        return exc.http_status, {"error": {"code": exc.code, "message": "service unavailable"}}
    return 500, INTERNAL_BODY
