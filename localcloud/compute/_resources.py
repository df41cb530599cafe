"""The stand-in's VM and operation records, and their GCE JSON shapes."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localcloud.compute._config import GuestSpec, InstanceSpec
from localcloud.compute._errors import GceError

if TYPE_CHECKING:
    from localcloud.compute._guest import Guest
    from localcloud.compute._metadata_server import MetadataServer

# Links point at the real API, as GCE's own do; clients parse them, they do not follow them.
API_ROOT = "https://www.googleapis.com/compute/v1/"

# Instance statuses, as GCE spells them.
TERMINATED = "TERMINATED"
PROVISIONING = "PROVISIONING"
STAGING = "STAGING"
RUNNING = "RUNNING"
STOPPING = "STOPPING"


def now_rfc3339() -> str:
    """A GCE timestamp (RFC 3339 with milliseconds and an offset)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_fingerprint() -> str:
    """An opaque fingerprint like GCE's (base64 of 8 bytes)."""
    return base64.b64encode(secrets.token_bytes(8)).decode()


def stable_id(*parts: str) -> int:
    """A uint64-looking id, stable for the same name across stand-in restarts."""
    return int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:15], 16)


def zone_path(project: str, zone: str) -> str:
    """`projects/p/zones/z`."""
    return f"projects/{project}/zones/{zone}"


def instance_path(project: str, zone: str, name: str) -> str:
    """`projects/p/zones/z/instances/n`, as error messages name a VM."""
    return f"{zone_path(project, zone)}/instances/{name}"


@dataclass
class Vm:
    """One emulated VM; mutated only under the fleet's lock."""

    project: str
    spec: InstanceSpec
    guest_spec: GuestSpec | None
    status: str = TERMINATED
    metadata_items: list[dict[str, str]] = field(default_factory=list)
    fingerprint: str = field(default_factory=new_fingerprint)
    created_at: str = field(default_factory=now_rfc3339)
    last_start_at: str | None = None
    last_stop_at: str | None = None
    # Bumped by every transition, so timers scheduled for an older one do nothing.
    generation: int = 0
    guest: Guest | None = None
    guest_error: str | None = None
    exit_code: int | None = None
    metadata_server: MetadataServer | None = None
    boot_failure: bool = False
    # Hangs in STAGING until stopped or deleted (a fault).
    staging_hang: bool = False
    # Spot preemption under way: the metadata server answers `instance/preempted` TRUE.
    preempted: bool = False
    # A delete is under way: the VM leaves the fleet once powered off.
    deleting: bool = False
    # Billing: seconds spent RUNNING or STOPPING (GCE bills until TERMINATED), monotonic clock.
    billed_s: float = 0.0
    running_since: float | None = None
    # Operations to finish when the current transition completes.
    pending_ops: list[Operation] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The VM's name."""
        return self.spec.name

    @property
    def zone(self) -> str:
        """The VM's zone."""
        return self.spec.zone

    @property
    def id(self) -> int:
        """The VM's numeric id."""
        return stable_id(self.project, self.zone, self.name)

    @property
    def path(self) -> str:
        """`projects/p/zones/z/instances/n`."""
        return instance_path(self.project, self.zone, self.name)

    def running_seconds(self) -> float:
        """Seconds billed so far: finished RUNNING periods plus the current one."""
        current = time.monotonic() - self.running_since if self.running_since else 0.0
        return round(self.billed_s + current, 3)

    def attributes(self) -> dict[str, str]:
        """Metadata items as a dict."""
        return {item["key"]: item.get("value", "") for item in self.metadata_items}

    def admin_view(self, log_dir: Path) -> dict[str, Any]:
        """The stand-in's own view (guest pid, exit code, metadata host) for tests and the CLI."""
        return {
            "name": self.name,
            "zone": self.zone,
            "status": self.status,
            "labels": dict(self.spec.labels),
            "pid": self.guest.pid if self.guest else None,
            "guest_exit_code": self.exit_code,
            "guest_error": self.guest_error,
            "boot_failure": self.boot_failure,
            "provisioning_model": self.spec.provisioning_model,
            "preempted": self.preempted,
            "source_template": self.spec.source_template,
            "metadata_host": self.metadata_server.address if self.metadata_server else None,
            "metadata": self.attributes(),
            "fingerprint": self.fingerprint,
            "log_path": str(log_dir / f"{self.name}.log"),
            "last_start_at": self.last_start_at,
            "last_stop_at": self.last_stop_at,
            # Seconds RUNNING or STOPPING so far: what GCE bills (chaos and pool reports).
            "running_seconds": self.running_seconds(),
        }

    def _scheduling(self) -> dict[str, Any]:
        scheduling: dict[str, Any] = {
            "onHostMaintenance": "TERMINATE",
            "automaticRestart": False,
            "preemptible": False,
            "provisioningModel": self.spec.provisioning_model,
        }
        if self.spec.provisioning_model == "SPOT":
            scheduling["instanceTerminationAction"] = self.spec.termination_action
        return scheduling

    def to_json(self) -> dict[str, Any]:
        """The instance resource as GCE answers it."""
        spec, zone_url = self.spec, API_ROOT + zone_path(self.project, self.zone)
        metadata: dict[str, Any] = {"kind": "compute#metadata", "fingerprint": self.fingerprint}
        if self.metadata_items:
            metadata["items"] = [dict(item) for item in self.metadata_items]
        body: dict[str, Any] = {
            "kind": "compute#instance",
            "id": str(self.id),
            "creationTimestamp": self.created_at,
            "name": self.name,
            "description": "",
            "zone": zone_url,
            "machineType": f"{zone_url}/machineTypes/{spec.machine_type}",
            "status": self.status,
            "labels": dict(spec.labels),
            "labelFingerprint": base64.b64encode(
                hashlib.sha256(repr(sorted(spec.labels.items())).encode()).digest()[:8]
            ).decode(),
            "metadata": metadata,
            "scheduling": self._scheduling(),
            "networkInterfaces": [
                {"kind": "compute#networkInterface", "name": "nic0", "networkIP": "127.0.0.1"}
            ],
            "selfLink": API_ROOT + self.path,
            "startRestricted": False,
            "deletionProtection": False,
        }
        if spec.accelerator_type and spec.accelerator_count:
            body["guestAccelerators"] = [
                {
                    "acceleratorType": f"{zone_url}/acceleratorTypes/{spec.accelerator_type}",
                    "acceleratorCount": spec.accelerator_count,
                }
            ]
        if self.last_start_at:
            body["lastStartTimestamp"] = self.last_start_at
        if self.last_stop_at:
            body["lastStopTimestamp"] = self.last_stop_at
        return body


@dataclass
class Operation:
    """A zonal operation; mutated only under the fleet's lock."""

    project: str
    zone: str
    operation_type: str
    target: Vm
    # GCE's own operations (a preemption) say `system` here.
    user: str = "localcloud@example.invalid"
    name: str = field(default_factory=lambda: _operation_name())
    status: str = "RUNNING"
    insert_time: str = field(default_factory=now_rfc3339)
    end_time: str | None = None
    error: GceError | None = None

    @property
    def id(self) -> int:
        """The operation's numeric id."""
        return stable_id(self.project, self.zone, self.name)

    @property
    def done(self) -> bool:
        """Whether the operation has finished (successfully or not)."""
        return self.status == "DONE"

    def finish(self, error: GceError | None = None) -> None:
        """Mark DONE, optionally failed; finishing twice keeps the first outcome."""
        if self.done:
            return
        self.status, self.error, self.end_time = "DONE", error, now_rfc3339()

    def to_json(self) -> dict[str, Any]:
        """The operation resource as GCE answers it."""
        zone_url = API_ROOT + zone_path(self.project, self.zone)
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(self.id),
            "name": self.name,
            "zone": zone_url,
            "operationType": self.operation_type,
            "targetLink": API_ROOT + self.target.path,
            "targetId": str(self.target.id),
            "status": self.status,
            "user": self.user,
            "progress": 100 if self.done else 0,
            "insertTime": self.insert_time,
            "startTime": self.insert_time,
            "selfLink": f"{zone_url}/operations/{self.name}",
        }
        if self.end_time:
            body["endTime"] = self.end_time
        if self.error is not None:
            body["error"] = {"errors": [self.error.operation_error()]}
            body["httpErrorStatusCode"] = self.error.http_status
            body["httpErrorMessage"] = _HTTP_REASONS.get(self.error.http_status, "ERROR")
        return body


_HTTP_REASONS = {
    400: "BAD REQUEST",
    403: "FORBIDDEN",
    409: "CONFLICT",
    500: "INTERNAL SERVER ERROR",
    503: "SERVICE UNAVAILABLE",
}


def _operation_name() -> str:
    # Real names look like operation-<ms>-<hex>-<hex>-<hex>.
    ms = int(time.time() * 1000)
    return f"operation-{ms}-{secrets.token_hex(6)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"
