"""Configuration and fault models of the Compute Engine stand-in."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# GCE resource names: lowercase letter first, then letters, digits, hyphens; at most 63.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GuestSpec(_Model):
    """The command a VM runs once it reaches RUNNING (later: the worker agent)."""

    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    # A real VM does not inherit the host's environment; the worker needs PATH and the
    # emulator hosts, so inheriting is the practical default.
    inherit_env: bool = True


class InstanceSpec(_Model):
    """One VM of the pool; it exists from the start, TERMINATED."""

    name: str
    zone: str
    labels: dict[str, str] = {}
    machine_type: str = "g2-standard-8"
    accelerator_type: str | None = "nvidia-l4"
    accelerator_count: int = Field(default=1, ge=0)
    # SPOT VMs can be preempted; on preemption they stop (STOP) or are deleted (DELETE).
    provisioning_model: Literal["STANDARD", "SPOT"] = "STANDARD"
    termination_action: Literal["STOP", "DELETE"] = "STOP"
    # Metadata items the VM is created with (from its template and the insert body).
    metadata: dict[str, str] = {}
    # The template a VM made by instances.insert came from (its selfLink), else None.
    source_template: str | None = None
    # Overrides the stand-in's default guest for this VM only.
    guest: GuestSpec | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"invalid GCE instance name: {value!r}")
        return value


class ComputeStandinConfig(_Model):
    """Everything the stand-in needs; loadable from JSON."""

    project: str = "comfyburst-local"
    project_number: int = 123456789012
    instances: list[InstanceSpec] = []
    staging_s: float = Field(default=1.0, ge=0)
    stopping_s: float = Field(default=0.5, ge=0)
    stop_grace_s: float = Field(default=5.0, ge=0)
    # Default guest for every VM; None means VMs run nothing (still reach RUNNING).
    guest: GuestSpec | None = None
    log_dir: Path = Path(".localcloud/compute/logs")
    service_account_email: str | None = None
    # The real API holds operations/{op}/wait for at most about two minutes.
    operation_wait_max_s: float = Field(default=120.0, gt=0)
    # Instance templates as instanceTemplates.insert takes them (`name`, `properties`, and
    # `region` for a regional one); more can be inserted over the API.
    templates: list[dict[str, Any]] = []
    # Zones that exist; inserts elsewhere are 404. Empty: the zones of `instances` and any
    # zone named in `zone_capacity_vms`.
    zones: list[str] = []
    # How many GPU VMs may be up (PROVISIONING..STOPPING) in a zone at once; beyond that a
    # start or insert meets a stockout, as when a zone runs out of a GPU. Absent: no limit.
    zone_capacity_vms: dict[str, int] = {}
    # Regional GPU quota (GPUs of VMs that are up, all types); beyond it QUOTA_EXCEEDED.
    region_gpu_quota: dict[str, int] = {}
    # Capacity stockouts of instances.insert: "operation" (accepted, the operation fails, as
    # GCE does) or "sync" (the call fails with 503). Starts always fail synchronously.
    insert_stockout_mode: Literal["sync", "operation"] = "operation"
    # Spot preemption: the guest's shutdown signal comes first, the hard power-off this long
    # after (Compute Engine gives Spot VMs 30 s).
    spot_shutdown_grace_s: float = Field(default=30.0, ge=0)
    # `instance/preempted` turns TRUE this long before the guest's shutdown signal, so a
    # long poll on it is answered first (both come at about the same moment on GCE).
    spot_signal_delay_s: float = Field(default=0.1, ge=0)
    # Chaos: each RUNNING Spot VM is preempted at random at this rate (per second); 0: never.
    spot_preemption_rate_per_s: float = Field(default=0.0, ge=0)
    # Seed of the random preemptions (None: not reproducible).
    chaos_seed: int | None = None

    def known_zones(self) -> set[str]:
        """The zones that exist in this stand-in."""
        return set(self.zones) or {s.zone for s in self.instances} | set(self.zone_capacity_vms)

    @model_validator(mode="after")
    def _unique_names(self) -> ComputeStandinConfig:
        seen: set[tuple[str, str]] = set()
        for spec in self.instances:
            key = (spec.zone, spec.name)
            if key in seen:
                raise ValueError(f"duplicate instance {spec.zone}/{spec.name}")
            seen.add(key)
        return self

    @property
    def sa_email(self) -> str:
        """The default service account, as GCE names it."""
        return (
            self.service_account_email
            or f"{self.project_number}-compute@developer.gserviceaccount.com"
        )


class FaultKind(StrEnum):
    """What goes wrong on the next matching start."""

    # ZONE_RESOURCE_POOL_EXHAUSTED: no capacity in the zone (quota does not help).
    STOCKOUT = "stockout"
    # QUOTA_EXCEEDED: the project's regional GPU/CPU quota is spent.
    QUOTA = "quota"
    # The VM reaches RUNNING but the guest never starts, like a hung boot.
    BOOT_FAILURE = "boot_failure"
    # The VM hangs in STAGING until it is stopped or deleted.
    STAGING_HANG = "staging_hang"
    # instances.insert is accepted, then its operation fails with an internal error.
    CREATE_FAILURE = "create_failure"


class Capacity(_Model):
    """The zone capacity and regional GPU quota in force, changed while running (chaos moves
    stockouts between zones and regions with it); each replaces the configured one whole."""

    zone_capacity_vms: dict[str, int] = {}
    region_gpu_quota: dict[str, int] = {}

    @field_validator("zone_capacity_vms", "region_gpu_quota")
    @classmethod
    def _not_negative(cls, value: dict[str, int]) -> dict[str, int]:
        if any(limit < 0 for limit in value.values()):
            raise ValueError("limits must be >= 0")
        return value


class Fault(_Model):
    """A fault injected into `start` or `insert`, matched by zone and/or instance (None = any)."""

    kind: FaultKind
    zone: str | None = None
    instance: str | None = None
    count: int | Literal["always"] = 1
    # Stockout only: "sync" fails the start call (HTTP 503); "operation" fails its operation.
    mode: Literal["sync", "operation"] = "sync"
    # Stockout only: zones to name in the ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS form
    # (`zonesAvailable`); None: the plain ZONE_RESOURCE_POOL_EXHAUSTED form.
    zones_available: list[str] | None = None

    @field_validator("count")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("count must be >= 1 or 'always'")
        return value

    def matches(self, zone: str, instance: str) -> bool:
        """Whether this fault applies to a start of zone/instance."""
        return self.zone in (None, zone) and self.instance in (None, instance)
