"""How many queued jobs of each GPU class the reaper may dispatch with no stopped VM free.

A class that creates VMs from a template makes progress on a queued job without a free VM in
two ways: it may still create one (its VMs, stopped ones included, are under `max_vms` and a
zone is under `max_vms_per_zone`), or `scheduling.stockout_replacement` names a stopped VM in a
stocked-out zone to delete so that it can. Without this the reaper dispatched queued jobs only
onto free VMs, and a job queued while every zone was out (or while the pool sat stopped in
stocked-out zones) waited for a VM that nothing would ever make.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from comfyburst.domain.gpu_classes import GpuClasses
from comfyburst.domain.scheduling import PoolLimits, create_zones, stockout_replacement
from comfyburst.ports import VmStatus
from comfyburst.schema import VmRecord


def create_room(
    classes: GpuClasses,
    fleet: Sequence[VmStatus],
    records: Mapping[str, VmRecord],
    now: datetime,
) -> dict[str, int]:
    """{class name: dispatches that may create a VM or make room for one} (classes with
    none are left out). The reaper knows no zone's recent refusals: VM documents' stockout
    cooldowns tell it which stopped VMs sit in stocked-out zones."""
    room: dict[str, int] = {}
    for gpu_class in classes.classes:
        if not gpu_class.creates:
            continue
        mine = [s for s in fleet if classes.of_vm(s.labels) == gpu_class.name]
        zones = [z for z in gpu_class.zones if gpu_class.template_for(z)]
        limits = PoolLimits(gpu_class.max_vms, gpu_class.max_vms_per_zone)
        slots = 0
        if create_zones(zones, mine, {}, limits, now):
            slots = max(0, gpu_class.max_vms - len(mine))
        if not slots and stockout_replacement(zones, mine, records, {}, limits, now) is not None:
            slots = 1
        if slots:
            room[gpu_class.name] = slots
    return room
