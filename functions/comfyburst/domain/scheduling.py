"""Which VM a queued job should start on: a pure ranking over the fleet and the lease documents.

Free means: the VM is TERMINATED, has no live lease and is not cooling down after a stockout.
Among free VMs, those whose disk holds the job's environment come first (no layer download and
unpack), then those that already cache more of the job's models (no download), then zones with
fewer busy VMs (spread the load, and the risk of one zone's stockout), then zones that recently
had capacity, then a hash of job id and VM name, so that concurrent dispatchers try different
VMs first instead of all racing for the same lease.

When no stopped VM takes the job, a new one is created from the pool's template: the zones
Compute just named (`zonesAvailable`) first, then zones not cooling down after a stockout or
quota refusal, those that recently had capacity first, within the per-zone and total limits.
Its name is derived from job, attempt and zone, so a retried create is the same create.

A stopped VM reserves nothing: when none of a class's stopped VMs can start (each is cooling
down after a stockout, or sits in a zone cooling down for the class) and the class's limits
leave no zone to create in, `stockout_replacement` names the least recently used stopped VM
in a stocked-out zone to delete, so that a VM can be created where there is capacity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from comfyburst.ports import SlotRequest, VmStatus
from comfyburst.schema import VmRecord

STOCKOUT_REASONS = frozenset(
    {"ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"}
)
CAPACITY_OUT_REASONS = STOCKOUT_REASONS | {"QUOTA_EXCEEDED"}

# The label the dispatcher puts on the VMs it creates: only those are ever deleted.
CREATED_LABEL = ("comfyburst-origin", "dispatcher")
DELETE_LEASE_PREFIX = "delete:"

REASON_NO_FREE_VM = "no free VM"
REASON_NO_CAPACITY = "all zones out of capacity"


@dataclass(frozen=True)
class ZoneState:
    """What one process saw of a zone lately (never stored; each dispatcher learns its own)."""

    cooldown_until: datetime | None = None  # skip creating here until then
    capacity_at: datetime | None = None  # the last start or create that Compute accepted


@dataclass(frozen=True)
class PoolLimits:
    """How many VMs the pool may hold (created or stopped, all of them count)."""

    max_vms: int
    max_vms_per_zone: int


@dataclass(frozen=True)
class Candidate:
    """A free VM, with whether it holds the job's environment and how many of its models."""

    name: str
    zone: str
    cached_models: int
    has_environment: bool = False


def is_free(status: VmStatus, record: VmRecord | None, now: datetime) -> bool:
    """TERMINATED, no live lease, not cooling down."""
    if status.status != "TERMINATED":
        return False
    if record is None:
        return True
    if record.is_leased(now):
        return False
    return record.cooldown_until is None or record.cooldown_until <= now


def rank_candidates(
    job_id: str,
    job_models: Iterable[str],
    fleet: Sequence[VmStatus],
    records: Mapping[str, VmRecord],
    now: datetime,
    zones: Mapping[str, ZoneState] | None = None,
    environment: str | None = None,
) -> list[Candidate]:
    """The free VMs in the order the job should try them (`environment`: the job's, if any)."""
    zone_states = zones or {}
    wanted = set(job_models)
    busy: dict[str, int] = {}
    free: list[Candidate] = []
    for status in fleet:
        record = records.get(status.name)
        busy.setdefault(status.zone, 0)
        if is_free(status, record, now):
            cached = len(wanted.intersection(record.models_cached)) if record else 0
            has_env = bool(record and environment and environment in record.environments)
            free.append(Candidate(status.name, status.zone, cached, has_env))
        elif status.status != "TERMINATED" or (record is not None and record.is_leased(now)):
            busy[status.zone] += 1
    free.sort(
        key=lambda c: (
            not c.has_environment,
            -c.cached_models,
            busy[c.zone],
            -_capacity_rank(zone_states.get(c.zone)),
            _spread(job_id, c.name),
        )
    )
    return free


def _capacity_rank(state: ZoneState | None) -> float:
    """Newer capacity ranks higher; a zone never seen ranks last."""
    if state is None or state.capacity_at is None:
        return float("-inf")
    return state.capacity_at.timestamp()


def vm_name(prefix: str, job_id: str, attempt: int, zone: str) -> str:
    """The name of the VM created for this job attempt in this zone (a valid GCE name)."""
    digest = hashlib.blake2b(f"{job_id}/{attempt}/{zone}".encode(), digest_size=6).hexdigest()
    return f"{prefix[: 63 - len(digest) - 1].rstrip('-')}-{digest}"


def create_zones(
    zones: Sequence[str],
    fleet: Sequence[VmStatus],
    states: Mapping[str, ZoneState],
    limits: PoolLimits,
    now: datetime,
    suggested: Sequence[str] = (),
    avoid: Iterable[str] = (),
) -> list[str]:
    """Zones to create a VM in, best first; empty when the pool is at its total limit.

    `suggested` (zones Compute just said have capacity) come first, even while cooling down;
    `avoid` (zones that refused during this pass) and cooling zones are left out otherwise.
    """
    if len(fleet) >= limits.max_vms:
        return []
    per_zone: dict[str, int] = {}
    for status in fleet:
        per_zone[status.zone] = per_zone.get(status.zone, 0) + 1
    allowed = [z for z in dict.fromkeys(zones) if per_zone.get(z, 0) < limits.max_vms_per_zone]
    avoided = set(avoid)
    first = [z for z in dict.fromkeys(suggested) if z in allowed and z not in avoided]

    def cooling(zone: str) -> bool:
        until = states.get(zone, ZoneState()).cooldown_until
        return until is not None and until > now

    rest = [z for z in allowed if z not in first and z not in avoided and not cooling(z)]
    # Stable: among equals, the deployment's own order (e.g. the region of the buckets first).
    rest.sort(key=lambda z: (-_capacity_rank(states.get(z)), per_zone.get(z, 0)))
    return first + rest


# Why a create was refused before any insert: the class's reservations are at a limit.
REASON_POOL_FULL = "the GPU class is at its max_vms"
REASON_ZONE_FULL = "the zone is at the GPU class's max_vms_per_zone"


@dataclass(frozen=True)
class Reservation:
    """A VM name a creator holds a slot of its class for (before and after its insert)."""

    zone: str
    at: datetime


def reserve_slot(
    reserved: Mapping[str, Reservation],
    listed: Mapping[str, str],
    name: str,
    zone: str,
    limits: PoolLimits,
    now: datetime,
    stale_before: datetime,
) -> tuple[dict[str, Reservation], str | None]:
    """The class's reservations after reserving `name` in `zone`, and None; or why not.

    What counts is every VM the listing shows (`listed`: name -> zone, stopped ones too) and
    every reservation, once per name. A reservation Compute does not list and made before
    `stale_before` is dropped (its creator crashed, or its VM was deleted): no slot leaks for
    long. A name already reserved or listed is this create's retry: it takes no other slot.
    """
    kept = {n: r for n, r in reserved.items() if n in listed or r.at >= stale_before}
    if name in kept or name in listed:
        return kept, None
    counted = dict(listed)
    for other, reservation in kept.items():
        counted.setdefault(other, reservation.zone)
    if len(counted) >= limits.max_vms:
        return kept, REASON_POOL_FULL
    if sum(1 for z in counted.values() if z == zone) >= limits.max_vms_per_zone:
        return kept, REASON_ZONE_FULL
    kept[name] = Reservation(zone=zone, at=now)
    return kept, None


def reserve_for(
    reserved: Mapping[str, Reservation], request: SlotRequest
) -> tuple[dict[str, Reservation], str | None]:
    """`reserve_slot` for a store's request (the stores run it inside their transaction)."""
    limits = PoolLimits(request.max_vms, request.max_vms_per_zone)
    return reserve_slot(
        reserved,
        request.listed,
        request.name,
        request.zone,
        limits,
        request.now,
        request.stale_before,
    )


def zone_cooldown_until(reason: str, now: datetime, cooldown_s: int) -> datetime | None:
    """When a zone that refused a VM for `reason` may be tried again; None: at once."""
    if reason in CAPACITY_OUT_REASONS:
        return now + timedelta(seconds=cooldown_s)
    return None


def next_candidate(candidates: Sequence[Candidate], avoid_zones: Iterable[str]) -> Candidate | None:
    """The first candidate outside `avoid_zones` (zones that just refused), else the first."""
    avoid = set(avoid_zones)
    for candidate in candidates:
        if candidate.zone not in avoid:
            return candidate
    return candidates[0] if candidates else None


def cooldown_until(reason: str, now: datetime, cooldown_s: int) -> datetime | None:
    """When a VM that failed to start for `reason` may be tried again; None: at once."""
    if reason in STOCKOUT_REASONS:
        return now + timedelta(seconds=cooldown_s)
    return None


def cooling_down(fleet: Sequence[VmStatus], records: Mapping[str, VmRecord], now: datetime) -> int:
    """How many VMs would be free but for a stockout cooldown."""
    count = 0
    for status in fleet:
        record = records.get(status.name)
        if (
            status.status == "TERMINATED"
            and record is not None
            and not record.is_leased(now)
            and record.cooldown_until is not None
            and record.cooldown_until > now
        ):
            count += 1
    return count


def queued_reason(
    had_candidates: bool, capacity_failures: int, other_failures: int, cooling: int = 0
) -> str:
    """Why a job is still queued after a dispatch attempt."""
    if had_candidates and capacity_failures > 0 and other_failures == 0:
        return REASON_NO_CAPACITY
    if not had_candidates and cooling > 0:
        return REASON_NO_CAPACITY  # the only VMs left are in zones that just ran out
    return REASON_NO_FREE_VM


def _spread(job_id: str, vm_name: str) -> bytes:
    return hashlib.blake2b(f"{job_id}/{vm_name}".encode(), digest_size=8).digest()


def vms_to_delete(
    fleet: Sequence[VmStatus],
    records: Mapping[str, VmRecord],
    now: datetime,
    idle_delete_days: float,
) -> list[tuple[VmStatus, str]]:
    """Stopped VMs the dispatcher created that should go, and why: those no `vms/` document
    knows (a create whose lease document is gone), and those unused for `idle_delete_days`."""
    key, value = CREATED_LABEL
    found: list[tuple[VmStatus, str]] = []
    for status in fleet:
        if status.status != "TERMINATED" or status.labels.get(key) != value:
            continue
        record = records.get(status.name)
        if record is None:
            found.append((status, "no vms/ document knows it"))
        elif record.is_leased(now):
            continue
        elif record.last_seen is not None and now - record.last_seen >= timedelta(
            days=idle_delete_days
        ):
            found.append((status, f"unused for {idle_delete_days:g} days"))
    return found


REASON_REPLACING = "replacing a stopped VM in a stocked-out zone"


@dataclass(frozen=True)
class Replacement:
    """A stopped VM to delete, and the zones its successor may be created in, best first."""

    vm: VmStatus
    zones: list[str]


def _zone_cooling(states: Mapping[str, ZoneState], zone: str, now: datetime) -> bool:
    until = states.get(zone, ZoneState()).cooldown_until
    return until is not None and until > now


def _stocked_out(
    status: VmStatus, record: VmRecord | None, states: Mapping[str, ZoneState], now: datetime
) -> bool:
    """The VM's start was refused lately (its cooldown), or its zone refuses the class."""
    if record is not None and record.cooldown_until is not None and record.cooldown_until > now:
        return True
    return _zone_cooling(states, status.zone, now)


def _being_deleted(record: VmRecord | None, now: datetime) -> bool:
    return (
        record is not None
        and record.is_leased(now)
        and record.lease is not None
        and record.lease.job_id.startswith(DELETE_LEASE_PREFIX)
    )


def stockout_replacement(
    zones: Sequence[str],
    fleet: Sequence[VmStatus],
    records: Mapping[str, VmRecord],
    states: Mapping[str, ZoneState],
    limits: PoolLimits,
    now: datetime,
    suggested: Sequence[str] = (),
    avoid: Iterable[str] = (),
) -> Replacement | None:
    """The stopped VM to delete so that the class can create where there is capacity, or None.

    `fleet` is the class's VMs, `zones` its zones with a template, `states` what this process
    saw of them, `suggested` the zones Compute named (`zonesAvailable`), `avoid` zones that
    refused during this pass. None while a stopped VM can still start (free, its zone not
    cooling down), while the class can create without deleting, while one of its VMs is being
    deleted already (one replacement at a time), or when no zone would take the new VM. Only
    a VM the dispatcher created (its label), stopped, with no live lease, in a stocked-out
    zone is named: the least recently used (`last_seen`; never seen first, then by name).
    """
    stopped = [s for s in fleet if s.status == "TERMINATED"]
    for status in stopped:
        record = records.get(status.name)
        if is_free(status, record, now) and not _stocked_out(status, record, states, now):
            return None  # it can still start
    if any(_being_deleted(records.get(s.name), now) for s in fleet):
        return None
    if create_zones(zones, fleet, states, limits, now, suggested, avoid):
        return None  # the class can create without deleting anything
    key, value = CREATED_LABEL
    victims = [
        s
        for s in stopped
        if s.labels.get(key) == value
        and not (records.get(s.name) is not None and records[s.name].is_leased(now))
        and _stocked_out(s, records.get(s.name), states, now)
    ]
    oldest = datetime.min.replace(tzinfo=now.tzinfo)

    def last_used(status: VmStatus) -> tuple[datetime, str]:
        record = records.get(status.name)
        return (record.last_seen if record and record.last_seen else oldest), status.name

    for victim in sorted(victims, key=last_used):
        rest = [s for s in fleet if s.name != victim.name]
        # Cooling zones are left out by create_zones unless Compute suggested them.
        targets = create_zones(zones, rest, states, limits, now, suggested, {*avoid, victim.zone})
        if targets:
            return Replacement(victim, targets)
    return None
