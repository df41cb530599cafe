"""The reaper planner's warm step (`domain/reaper.py`): keep each GPU class's warm count of VMs
up inside its schedule's windows (domain/warm.py), and stop the idle warm VMs beyond it.

A VM counts as up when Compute has it PROVISIONING, STAGING or RUNNING and this period does
not stop it: busy, draining and warm VMs alike (a busy VM drains and stays warm after its
job). Below the count, stopped free VMs of the class are started (none this period if the
class dispatches queued jobs: those start VMs of their own). Above it, only VMs held by a
warm lease (`drain:warm:{vm}`, which a draining worker takes while its class's window is
open) and named by no live job are stopped: never a VM with a job, a job's lease or a plain
drain. Outside every window the count is 0, so exactly the warm-held VMs stop; VMs of classes
without a schedule never hold a warm lease, and nothing changes for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from comfyburst.domain._reaper_policy import DRAIN_LEASE_PREFIX, UP_STATUSES, ReaperPolicy
from comfyburst.domain.gpu_classes import GpuClasses
from comfyburst.domain.reaper_actions import DispatchJob, StartWarmVm, StopWarmVm, WarmAction
from comfyburst.domain.scheduling import is_free
from comfyburst.domain.warm import warm_target
from comfyburst.ports import VmStatus
from comfyburst.schema import Job, VmRecord

# Both are drain leases to everything else (is_drain_lease): a warm VM is never taken as a
# stray, and its worker claims past neither marker but its own.
WARM_LEASE_PREFIX = f"{DRAIN_LEASE_PREFIX}warm:"
STOP_LEASE_PREFIX = f"{DRAIN_LEASE_PREFIX}stop:"
# How long the stop marker holds a VM being stopped: past the stop's own few seconds.
STOP_LEASE_S = 120.0
# Beyond the boot timeout, so the worker of a warm-started VM finds its drain lease live.
_START_MARGIN_S = 60.0


def warm_lease_id(vm_name: str) -> str:
    """The lease a draining worker holds while it stays warm."""
    return f"{WARM_LEASE_PREFIX}{vm_name}"


def is_warm_lease(job_id: str) -> bool:
    return job_id.startswith(WARM_LEASE_PREFIX)


def warm_actions(
    classes: GpuClasses,
    fleet: Mapping[str, VmStatus],
    records: Mapping[str, VmRecord],
    busy: set[str],
    stopping: set[str],
    cooling: set[str],
    dispatching: set[str],
    now: datetime,
    policy: ReaperPolicy,
) -> list[WarmAction]:
    """The starts and stops that bring each class to its warm count at `now`.

    `busy`: VMs a live job names; `stopping`/`cooling`: VMs this period already stops or
    cools; `dispatching`: classes with queued jobs dispatched this period.
    """
    targets = warm_target(classes.classes, now)
    actions: list[WarmAction] = []
    for gpu_class in classes.classes:
        name = gpu_class.name
        target = targets.get(name, 0)
        mine = sorted(
            (s for s in fleet.values() if classes.of_vm(s.labels) == name), key=lambda s: s.name
        )
        up = [s for s in mine if s.status in UP_STATUSES and s.name not in stopping]
        if len(up) < target and name not in dispatching:
            free = [
                s for s in mine if s.name not in cooling and is_free(s, records.get(s.name), now)
            ]
            until = now + timedelta(
                seconds=policy.boot_timeout_s + policy.drain_grace_s + _START_MARGIN_S
            )
            why = f"warm: class {name} keeps {target} up, {len(up)} up"
            actions.extend(
                StartWarmVm(s.name, s.zone, until, why) for s in free[: target - len(up)]
            )
        elif len(up) > target:
            held = [
                (s, lease)
                for s in reversed(up)
                if s.name not in busy
                and (lease := _warm_lease(records.get(s.name), now)) is not None
            ]
            why = (
                f"warm: class {name} keeps {target} up, {len(up)} up"
                if target
                else f"warm: class {name} is outside its warm windows"
            )
            actions.extend(
                StopWarmVm(s.name, s.zone, lease, why) for s, lease in held[: len(up) - target]
            )
    return actions


def _warm_lease(record: VmRecord | None, now: datetime) -> str | None:
    lease = record.lease if record is not None else None
    if lease is None or lease.expires_at <= now or not is_warm_lease(lease.job_id):
        return None
    return lease.job_id


def warm_step(
    jobs: Sequence[Job],
    ending: set[str],
    fleet: Mapping[str, VmStatus],
    records: Mapping[str, VmRecord],
    stopping: set[str],
    cooling: set[str],
    dispatches: Sequence[DispatchJob],
    now: datetime,
    policy: ReaperPolicy,
) -> list[WarmAction]:
    """`warm_actions` over the planner's state once its other actions are planned."""
    classes = policy.classes
    if classes is None or (not any(c.warm for c in classes.classes) and not _any_warm(records)):
        return []
    busy = {j.vm.name for j in jobs if j.state.live and j.vm and j.job_id not in ending}
    of_job = {j.job_id: j.gpu_class for j in jobs}
    dispatching = {classes.of_job(of_job.get(d.job_id)) for d in dispatches}
    return warm_actions(classes, fleet, records, busy, stopping, cooling, dispatching, now, policy)


def _any_warm(records: Mapping[str, VmRecord]) -> bool:
    """A warm lease left from a schedule since removed: its VM still stops."""
    return any(r.lease is not None and is_warm_lease(r.lease.job_id) for r in records.values())
