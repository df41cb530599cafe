"""One root exception, small named subclasses, and their HTTP status in one place."""

from __future__ import annotations

from typing import Any


class ComfyBurstError(Exception):
    """Root of every error ComfyBurst raises on purpose."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_body(self) -> dict[str, Any]:
        """The machine-readable error body the API answers with."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(ComfyBurstError):
    """The caller sent something we will not accept."""

    code = "invalid_request"
    http_status = 400


class InvalidJson(InvalidRequest):
    """The body is not JSON we can take: malformed, NaN/Infinity, lone surrogates, too deep."""

    code = "invalid_json"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"
    http_status = 413


class UploadInvalid(InvalidRequest):
    """A job names an uploaded model that is missing, of another size, or named wrongly."""

    code = "upload_invalid"
    http_status = 422


class PreflightRejected(ComfyBurstError):
    """Pre-flight found that the workflow cannot run; the body carries ComfyUI's answer."""

    code = "workflow_invalid"
    http_status = 422

    def __init__(self, comfy_error: Any, node_errors: dict[str, Any]) -> None:
        message = comfy_error.get("message") if isinstance(comfy_error, dict) else None
        super().__init__(str(message or "workflow failed validation"), details=comfy_error)
        self.node_errors = node_errors

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        body["node_errors"] = self.node_errors
        return body


class Unauthenticated(ComfyBurstError):
    code = "unauthenticated"
    http_status = 401


class Forbidden(ComfyBurstError):
    code = "forbidden"
    http_status = 403


class GpuClassForbidden(Forbidden):
    """The deployer's limits do not let this caller use the GPU class the job asks for."""

    code = "gpu_class_forbidden"

    def __init__(self, message: str, *, gpu_class: str, allowed: list[str]) -> None:
        super().__init__(
            message, field="options.gpu_class", details={"gpu_class": gpu_class, "allowed": allowed}
        )


class QueueFull(ComfyBurstError):
    """The caller has as many jobs queued as the deployer allows; nothing was written. The
    caller may retry after `retry_after_s`."""

    code = "queue_full"
    http_status = 429

    def __init__(self, message: str, *, max_queued: int, retry_after_s: int) -> None:
        super().__init__(message, details={"max_queued": max_queued})
        self.retry_after_s = retry_after_s


class BudgetExceeded(Forbidden):
    """The caller's month-to-date usage reached its monthly budget; nothing was written.

    403, not 402: RFC 9110 reserves 402 with no defined meaning, while 403 is a refusal the
    server understood and that repeating will not change (here: until the month turns or the
    deployer raises the budget)."""

    code = "budget_exceeded"

    def __init__(self, message: str, *, budget_usd: float, spent_usd: float, resets_at: Any):
        super().__init__(
            message,
            details={
                "monthly_budget_usd": budget_usd,
                "spent_usd": spent_usd,
                "resets_at": resets_at.isoformat(),
            },
        )


class EnvironmentLimitReached(Forbidden):
    """The caller asked for as many environments as its `max_environments` lets it; nothing was
    written. 403, not 429: environments are not deleted, so waiting does not free one."""

    code = "environment_limit_reached"

    def __init__(self, message: str, *, max_environments: int, environments: int) -> None:
        super().__init__(
            message,
            details={"max_environments": max_environments, "environments": environments},
        )


class NotFound(ComfyBurstError):
    code = "not_found"
    http_status = 404


class Conflict(ComfyBurstError):
    """The request conflicts with the current state (e.g. cancelling a finished job)."""

    code = "conflict"
    http_status = 409


class IdempotencyConflict(Conflict):
    """The Idempotency-Key was used before with a different request (names no job)."""

    code = "idempotency_conflict"


class JobFinished(Conflict):
    """The job is terminal; there is nothing left to cancel."""

    code = "job_finished"


class Contended(Conflict):
    """A job update kept losing its transaction to concurrent writers (a 409, not a 5xx: the
    job is fine, another writer won); the caller may retry after `retry_after_s`."""

    code = "contended"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IllegalTransition(ComfyBurstError):
    """A job state change that the transition table does not allow."""

    code = "illegal_transition"
    http_status = 409

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"job cannot move from {current} to {target}")
        self.current = current
        self.target = target


class PreconditionFailed(ComfyBurstError):
    """An optimistic write lost its race (document changed or already exists)."""

    code = "precondition_failed"
    http_status = 409


class JobExists(PreconditionFailed):
    """A commit that would create a job found it stored already (a retried submit); `job` is
    the stored one. Nothing of that commit was written."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {getattr(job, 'job_id', '?')} already exists")
        self.job = job


class SettingsError(ComfyBurstError):
    """A required setting is missing or invalid."""

    code = "settings"


class CapacityError(ComfyBurstError):
    """Compute could not start a VM: stockout, quota, or not ready. Retry elsewhere."""

    code = "capacity"
    http_status = 503

    def __init__(self, message: str, *, reason: str, zones_available: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        # Zones Compute said have capacity now (a stockout's `zonesAvailable`), if it said.
        self.zones_available = zones_available


class ManifestInvalid(ComfyBurstError):
    """A done.json that does not validate; the job fails, the event is not retried."""

    code = "manifest_invalid"
    http_status = 400


class DeliveryFailed(ComfyBurstError):
    """The receiver did not take the webhook (no answer, timeout, non-2xx): retry later."""

    code = "webhook_delivery_failed"
    http_status = 503
