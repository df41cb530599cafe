"""Fleet port over google-cloud-compute (InstancesClient + ZoneOperationsClient).

Never calls `ExtendedOperation.result()`: it polls through an internal client that ignores a
custom endpoint. Starts are not awaited at all; `operation_error` reads an operation on demand.
Creates (instances.insert from the pool's template) are awaited only briefly (`create_wait_s`),
long enough for Compute's capacity check, so a stockout can be followed to `zonesAvailable`.
"""

from __future__ import annotations

from datetime import datetime

from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from comfyburst.errors import CapacityError, NotFound, PreconditionFailed
from comfyburst.ports import VmStatus

# GCE error reasons that mean "this VM cannot start now; try another one".
CAPACITY_REASONS = (
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "QUOTA_EXCEEDED",
    "RESOURCE_NOT_READY",
)
_NOT_READY_ALIASES = {"resourceNotReady": "RESOURCE_NOT_READY"}


def _error_reason(exc: gexc.GoogleAPICallError) -> str:
    """The most specific reason GCE gave: ErrorInfo, then errors[].reason, then the message."""
    candidates: list[str] = []
    if getattr(exc, "reason", None):
        candidates.append(str(exc.reason))
    for item in getattr(exc, "errors", None) or ():
        if isinstance(item, dict) and item.get("reason"):
            candidates.append(str(item["reason"]))
    for reason in candidates:
        normalised = _NOT_READY_ALIASES.get(reason, reason)
        if normalised in CAPACITY_REASONS:
            return normalised
    text = str(exc)
    for known in CAPACITY_REASONS:
        if known in text:
            return known
    return candidates[0] if candidates else type(exc).__name__


def _split_zones(value: str | None) -> tuple[str, ...]:
    return tuple(z.strip() for z in (value or "").split(",") if z.strip())


def _capacity_or_raise(exc: gexc.GoogleAPICallError, what: str) -> CapacityError:
    reason = _error_reason(exc)
    # The _WITH_DETAILS stockout names zones that have capacity in its ErrorInfo metadata.
    zones = _split_zones((getattr(exc, "metadata", None) or {}).get("zonesAvailable"))
    if reason in CAPACITY_REASONS:
        return CapacityError(f"{what}: {exc.message}", reason=reason, zones_available=zones)
    if isinstance(exc, gexc.ServiceUnavailable):
        return CapacityError(f"{what}: {exc.message}", reason="UNAVAILABLE")
    raise exc


def _zone_name(zone: str) -> str:
    return zone.rsplit("/", 1)[-1]


def _to_status(instance: compute_v1.Instance) -> VmStatus:
    metadata = instance.metadata
    return VmStatus(
        name=instance.name,
        zone=_zone_name(instance.zone),
        status=instance.status,
        metadata={item.key: item.value for item in metadata.items},
        fingerprint=metadata.fingerprint or None,
        labels=dict(instance.labels),
        last_start_at=_rfc3339(instance.last_start_timestamp),
    )


def _rfc3339(text: str) -> datetime | None:
    """Compute's RFC 3339 timestamps (`2026-01-01T00:00:00.000-08:00`); None when unset/odd."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


class ComputeFleet:
    """The GPU pool: instances carrying `label` (key=value) in `zones`."""

    def __init__(
        self,
        instances_client: compute_v1.InstancesClient,
        zone_ops_client: compute_v1.ZoneOperationsClient,
        project: str,
        zones: list[str],
        label: str,
        create_wait_s: float = 3.0,
    ) -> None:
        self._instances = instances_client
        self._ops = zone_ops_client
        self._project = project
        self._zones = list(zones)
        self._create_wait_s = create_wait_s
        key, _, value = label.partition("=")
        self._filter = f'labels.{key.strip()} = "{value.strip()}"'

    def list(self) -> list[VmStatus]:
        found: list[VmStatus] = []
        for zone in self._zones:
            request = compute_v1.ListInstancesRequest(
                project=self._project, zone=zone, filter=self._filter
            )
            found.extend(_to_status(i) for i in self._instances.list(request=request))
        return found

    def get(self, zone: str, name: str) -> VmStatus:
        try:
            instance = self._instances.get(project=self._project, zone=zone, instance=name)
        except gexc.NotFound:
            raise NotFound(f"instance {zone}/{name} not found") from None
        return _to_status(instance)

    def start(self, zone: str, name: str, request_id: str) -> str:
        try:
            op = self._instances.start_unary(
                request=compute_v1.StartInstanceRequest(
                    project=self._project, zone=zone, instance=name, request_id=request_id
                )
            )
        except gexc.GoogleAPICallError as exc:
            raise _capacity_or_raise(exc, f"start {zone}/{name}") from None
        # A stockout may also come back as an operation that is already DONE with an error.
        _raise_op_capacity(op, f"start {zone}/{name}")
        return str(op.name)

    def stop(self, zone: str, name: str, request_id: str) -> str:
        op = self._instances.stop_unary(
            request=compute_v1.StopInstanceRequest(
                project=self._project, zone=zone, instance=name, request_id=request_id
            )
        )
        return str(op.name)

    def set_metadata(
        self, zone: str, name: str, items: dict[str, str], fingerprint: str | None, request_id: str
    ) -> str:
        current = self._instances.get(project=self._project, zone=zone, instance=name).metadata
        if fingerprint is not None and fingerprint != current.fingerprint:
            raise PreconditionFailed(f"metadata of {zone}/{name} changed")
        merged = {item.key: item.value for item in current.items}
        merged.update(items)
        body = compute_v1.Metadata(
            fingerprint=fingerprint or current.fingerprint,
            items=[compute_v1.Items(key=k, value=v) for k, v in merged.items()],
        )
        try:
            op = self._instances.set_metadata_unary(
                request=compute_v1.SetMetadataInstanceRequest(
                    project=self._project,
                    zone=zone,
                    instance=name,
                    metadata_resource=body,
                    request_id=request_id,
                )
            )
        except gexc.PreconditionFailed:
            raise PreconditionFailed(f"metadata of {zone}/{name} changed") from None
        return str(op.name)

    def operation_error(self, zone: str, operation: str) -> str | None:
        op = self._ops.get(project=self._project, zone=zone, operation=operation)
        return _op_error_code(op)

    def create(
        self,
        zone: str,
        name: str,
        template: str,
        labels: dict[str, str],
        metadata: dict[str, str],
        request_id: str,
    ) -> str:
        instance = compute_v1.Instance(
            name=name,
            labels=labels,
            metadata=compute_v1.Metadata(
                items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]
            ),
        )
        what = f"create {zone}/{name}"
        try:
            op = self._instances.insert_unary(
                request=compute_v1.InsertInstanceRequest(
                    project=self._project,
                    zone=zone,
                    instance_resource=instance,
                    source_instance_template=template,
                    request_id=request_id,
                )
            )
        except gexc.Conflict:
            raise PreconditionFailed(f"instance {zone}/{name} exists") from None
        except gexc.GoogleAPICallError as exc:
            raise _capacity_or_raise(exc, what) from None
        if op.status != compute_v1.Operation.Status.DONE and self._create_wait_s > 0:
            try:
                op = self._ops.wait(
                    project=self._project,
                    zone=zone,
                    operation=op.name,
                    timeout=self._create_wait_s,
                )
            except Exception:  # still running past the check: the reaper reads it later
                return str(op.name)
        _raise_op_capacity(op, what)
        code = _op_error_code(op)
        if code is not None:  # e.g. INTERNAL_ERROR: this create failed; another may not
            raise CapacityError(f"{what} failed: {code}", reason=code)
        return str(op.name)

    def delete(self, zone: str, name: str, request_id: str) -> str:
        try:
            op = self._instances.delete_unary(
                request=compute_v1.DeleteInstanceRequest(
                    project=self._project, zone=zone, instance=name, request_id=request_id
                )
            )
        except gexc.NotFound:
            raise NotFound(f"instance {zone}/{name} not found") from None
        return str(op.name)


def _raise_op_capacity(op: compute_v1.Operation, what: str) -> None:
    """CapacityError (with `zonesAvailable`) for a DONE operation that failed for capacity."""
    code = _op_error_code(op)
    if code is None or code not in CAPACITY_REASONS:
        return
    zones: tuple[str, ...] = ()
    for detail in op.error.errors[0].error_details:
        if detail.error_info and "zonesAvailable" in detail.error_info.metadatas:
            zones = _split_zones(detail.error_info.metadatas["zonesAvailable"])
    raise CapacityError(f"{what} failed: {code}", reason=code, zones_available=zones)


def _op_error_code(op: compute_v1.Operation) -> str | None:
    """The first error code of a DONE operation, else None."""
    if op.status != compute_v1.Operation.Status.DONE:
        return None
    errors = op.error.errors if op.error else []
    if not errors:
        return None
    return str(errors[0].code) or "UNKNOWN"
