"""Zone capacity and regional GPU quota: what makes a start or insert fail as GCE's would."""

from __future__ import annotations

from collections.abc import Iterable

from localcloud.compute import _errors as errors
from localcloud.compute._config import ComputeStandinConfig, InstanceSpec
from localcloud.compute._resources import PROVISIONING, RUNNING, STAGING, STOPPING, Vm, zone_path
from localcloud.compute._templates import region_of

# A VM holds its zone's capacity (and its GPUs count against quota) until TERMINATED.
_UP = (PROVISIONING, STAGING, RUNNING, STOPPING)


def _is_gpu(spec: InstanceSpec) -> bool:
    return bool(spec.accelerator_type and spec.accelerator_count)


def gpu_metric(spec: InstanceSpec) -> str:
    """GCE's quota metric for the VM's accelerator, e.g. NVIDIA_L4_GPUS (CPUS without one)."""
    if not _is_gpu(spec) or spec.accelerator_type is None:
        return "CPUS"
    return f"NVIDIA_{spec.accelerator_type.removeprefix('nvidia-').upper().replace('-', '_')}_GPUS"


def attachment(spec: InstanceSpec) -> str | None:
    """`nvidia-l4:1`, as stockout details name what was asked for."""
    return f"{spec.accelerator_type}:{spec.accelerator_count}" if _is_gpu(spec) else None


def _up_in_zone(vms: Iterable[Vm], zone: str, exclude: Vm) -> int:
    return sum(1 for v in vms if v is not exclude and v.zone == zone and v.status in _UP)


def zones_with_room(config: ComputeStandinConfig, vms: list[Vm], zone: str, vm: Vm) -> list[str]:
    """Other zones of `zone`'s region that could take `vm` now (as GCE suggests them)."""
    region = region_of(zone)
    found = []
    for other in sorted(config.known_zones()):
        if other == zone or region_of(other) != region:
            continue
        limit = config.zone_capacity_vms.get(other)
        if limit is None or _up_in_zone(vms, other, vm) < limit:
            found.append(other)
    return found


def stockout(config: ComputeStandinConfig, vms: list[Vm], vm: Vm) -> errors.GceError | None:
    """The stockout a start or insert of `vm` meets now, if its zone is full."""
    limit = config.zone_capacity_vms.get(vm.zone)
    if limit is None or not _is_gpu(vm.spec) or _up_in_zone(vms, vm.zone, vm) < limit:
        return None
    return errors.stockout_with_details(
        zone_path(vm.project, vm.zone),
        vm.spec.machine_type,
        attachment(vm.spec),
        zones_with_room(config, vms, vm.zone, vm),
    )


def quota(config: ComputeStandinConfig, vms: list[Vm], vm: Vm) -> errors.GceError | None:
    """QUOTA_EXCEEDED when `vm`'s GPUs would pass its region's quota."""
    region = region_of(vm.zone)
    limit = config.region_gpu_quota.get(region)
    if limit is None or not _is_gpu(vm.spec):
        return None
    used = sum(
        v.spec.accelerator_count
        for v in vms
        if v is not vm and v.status in _UP and _is_gpu(v.spec) and region_of(v.zone) == region
    )
    if used + vm.spec.accelerator_count <= limit:
        return None
    return errors.quota_exceeded(gpu_metric(vm.spec), region, limit)
