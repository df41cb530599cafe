"""GCE-shaped errors, so google-api-core raises the exception class the real API would cause."""

from __future__ import annotations

from typing import Any

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class GceError(Exception):
    """An API error answered as `{"error": {code, message, errors[...]}}`."""

    def __init__(
        self,
        http_status: int,
        reason: str,
        message: str,
        *,
        error_info: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason
        self.message = message
        # Newer GCE errors (quota, stockout) also carry a google.rpc.ErrorInfo, which
        # google-api-core exposes as `exc.reason`; older ones only have errors[].reason.
        self.error_info = error_info
        self.metadata = metadata or {}

    def body(self) -> dict[str, Any]:
        """The JSON body GCE answers with."""
        error: dict[str, Any] = {
            "code": self.http_status,
            "message": self.message,
            "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
        }
        if self.error_info:
            error["details"] = [
                {
                    "@type": _ERROR_INFO,
                    "reason": self.reason,
                    "domain": "compute.googleapis.com",
                    "metadata": self.metadata,
                }
            ]
        return {"error": error}


def not_found(resource: str) -> GceError:
    """404 for a resource path like `projects/p/zones/z/instances/n`."""
    return GceError(404, "notFound", f"The resource '{resource}' was not found")


def not_ready(resource: str) -> GceError:
    """400 for an operation on a VM in a transitional state (e.g. start while STOPPING)."""
    return GceError(400, "resourceNotReady", f"The resource '{resource}' is not ready")


def invalid(field: str, value: str, why: str) -> GceError:
    """400 for a bad request field."""
    return GceError(400, "invalid", f"Invalid value for field '{field}': '{value}'. {why}")


def fingerprint_mismatch() -> GceError:
    """412, as GCE answers a setMetadata with a stale or missing fingerprint."""
    return GceError(
        412,
        "conditionNotMet",
        "Supplied fingerprint does not match current metadata fingerprint.",
    )


def stockout(zone_path: str) -> GceError:
    """503 ZONE_RESOURCE_POOL_EXHAUSTED: the zone has no capacity for this VM."""
    return GceError(
        503,
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        f"The zone '{zone_path}' does not have enough resources available to fulfill "
        "the request.  Try a different zone, or try again later.",
        error_info=True,
        metadata={"zone": zone_path.rsplit("/", 1)[-1], "vmType": "GPU"},
    )


def quota_exceeded(metric: str, region: str) -> GceError:
    """403 QUOTA_EXCEEDED: the regional quota is spent."""
    return GceError(
        403,
        "QUOTA_EXCEEDED",
        f"Quota '{metric}' exceeded.  Limit: 0.0 in region {region}.",
        error_info=True,
        metadata={"quota_metric": metric, "region": region},
    )


def unsupported(method: str, path: str) -> GceError:
    """The stand-in does not emulate this call; say so instead of guessing."""
    return GceError(404, "notFound", f"The Compute stand-in does not implement {method} {path}")
