"""GCE-shaped errors, so google-api-core raises the exception class the real API would cause."""

from __future__ import annotations

from typing import Any

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_LOCALIZED = "type.googleapis.com/google.rpc.LocalizedMessage"
_HELP = "type.googleapis.com/google.rpc.Help"
_QUOTA = "type.googleapis.com/google.rpc.QuotaFailure"
_RESOURCE_ERROR_DOC = "https://cloud.google.com/compute/docs/resource-error"


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
        info_reason: str | None = None,
        localized: str | None = None,
        help_url: str | None = None,
        quota_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason
        self.message = message
        # Newer GCE errors (quota, stockout) also carry a google.rpc.ErrorInfo, which
        # google-api-core exposes as `exc.reason`; older ones only have errors[].reason.
        self.error_info = error_info
        self.metadata = metadata or {}
        # The stockout _WITH_DETAILS form names ErrorInfo's reason `resource_availability`.
        self.info_reason = info_reason or reason
        self.localized = localized
        self.help_url = help_url
        self.quota_info = quota_info

    def body(self) -> dict[str, Any]:
        """The JSON body GCE answers with."""
        error: dict[str, Any] = {
            "code": self.http_status,
            "message": self.message,
            "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
        }
        if self.error_info:
            details: list[dict[str, Any]] = [
                {
                    "@type": _ERROR_INFO,
                    "reason": self.info_reason,
                    "domain": "compute.googleapis.com",
                    "metadata": self.metadata,
                }
            ]
            if self.localized:
                details.append({"@type": _LOCALIZED, "locale": "en-US", "message": self.localized})
            if self.help_url:
                details.append({"@type": _HELP, "links": [self._link()]})
            if self.quota_info:
                violation = {"subject": self.quota_info.get("metricName", ""), "description": ""}
                details.append({"@type": _QUOTA, "violations": [violation]})
            error["details"] = details
        return {"error": error}

    def _link(self) -> dict[str, str]:
        return {"description": "Troubleshooting documentation", "url": self.help_url or ""}

    def operation_error(self) -> dict[str, Any]:
        """One `error.errors[]` entry of a failed operation, with its `errorDetails`."""
        entry: dict[str, Any] = {"code": self.reason, "message": self.message}
        details: list[dict[str, Any]] = []
        if self.help_url:
            details.append({"help": {"links": [self._link()]}})
        if self.localized:
            details.append({"localizedMessage": {"locale": "en-US", "message": self.localized}})
        if self.error_info:
            details.append(
                {
                    "errorInfo": {
                        "domain": "compute.googleapis.com",
                        "reason": self.info_reason,
                        "metadatas": dict(self.metadata),
                    }
                }
            )
        if self.quota_info:
            details.append({"quotaInfo": dict(self.quota_info)})
        if details:
            entry["errorDetails"] = details
        return entry


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


def stockout_with_details(
    zone_path: str, vm_type: str, attachment: str | None, zones_available: list[str]
) -> GceError:
    """503 ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: no capacity here; GCE names zones
    that have it (`zonesAvailable` in the ErrorInfo metadata), when there are any."""
    zone = zone_path.rsplit("/", 1)[-1]
    what = f"A {vm_type} VM instance"
    if attachment:
        kind, _, count = attachment.partition(":")
        what += f" with {count} {kind} accelerator(s)"
    localized = f"{what} is currently unavailable in the {zone} zone."
    metadata = {"vmType": vm_type, "zone": zone}
    if attachment:
        metadata["attachment"] = attachment
    if zones_available:
        metadata["zonesAvailable"] = ",".join(zones_available)
        localized += (
            f" Consider trying your request in the {', '.join(zones_available)} zone(s), "
            "which currently has capacity to accommodate your request."
        )
    localized += (
        " Alternatively, you can try your request again with a different VM hardware "
        "configuration or at a later time. For more information, see the troubleshooting "
        "documentation."
    )
    return GceError(
        503,
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        f"The zone '{zone_path}' does not have enough resources available to fulfill the "
        "request.  '(resource type:compute)'.",
        error_info=True,
        metadata=metadata,
        info_reason="resource_availability",
        localized=localized,
        help_url=_RESOURCE_ERROR_DOC,
    )


def quota_exceeded(metric: str, region: str, limit: float = 0.0) -> GceError:
    """403 QUOTA_EXCEEDED: the regional quota is spent."""
    return GceError(
        403,
        "QUOTA_EXCEEDED",
        f"Quota '{metric}' exceeded.  Limit: {float(limit)} in region {region}.",
        error_info=True,
        metadata={"quota_metric": metric, "region": region},
        quota_info={
            "metricName": f"compute.googleapis.com/{metric.lower()}",
            "limitName": f"{metric.replace('_', '-')}-per-project-region",
            "dimensions": {"region": region},
            "limit": float(limit),
        },
    )


def already_exists(resource: str) -> GceError:
    """409, as GCE answers an insert of a name that is taken."""
    return GceError(409, "alreadyExists", f"The resource '{resource}' already exists")


def internal_error() -> GceError:
    """An operation that failed inside Compute Engine (nothing the caller did)."""
    return GceError(
        500, "INTERNAL_ERROR", "Internal error. Please try again or contact Google Support."
    )


def unsupported(method: str, path: str) -> GceError:
    """The stand-in does not emulate this call; say so instead of guessing."""
    return GceError(404, "notFound", f"The Compute stand-in does not implement {method} {path}")
