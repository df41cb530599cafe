"""Armed faults and the GCE errors they turn into."""

from __future__ import annotations

from localcloud.compute import _errors as errors
from localcloud.compute._capacity import attachment, gpu_metric
from localcloud.compute._config import Fault, FaultKind
from localcloud.compute._resources import Vm, zone_path
from localcloud.compute._templates import region_of


class FaultBook:
    """Faults in the order armed; not thread-safe (the fleet's lock guards it)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, faults: list[Fault]) -> list[Fault]:
        """Arm faults; return all armed."""
        self._faults.extend(faults)
        return list(self._faults)

    def list(self) -> list[Fault]:
        """The armed faults."""
        return list(self._faults)

    def clear(self) -> None:
        """Disarm everything."""
        self._faults.clear()

    def take(self, kind: FaultKind, vm: Vm) -> Fault | None:
        """Consume one use of the first fault of `kind` matching `vm`."""
        for index, fault in enumerate(self._faults):
            if fault.kind == kind and fault.matches(vm.zone, vm.name):
                if fault.count != "always":
                    remaining = int(fault.count) - 1
                    if remaining:
                        self._faults[index] = fault.model_copy(update={"count": remaining})
                    else:
                        del self._faults[index]
                return fault
        return None


def fault_error(fault: Fault, vm: Vm) -> errors.GceError:
    """The error GCE answers for a stockout, quota or create fault on `vm`."""
    if fault.kind == FaultKind.STOCKOUT:
        if fault.zones_available is None:
            return errors.stockout(zone_path(vm.project, vm.zone))
        return errors.stockout_with_details(
            zone_path(vm.project, vm.zone),
            vm.spec.machine_type,
            attachment(vm.spec),
            [z for z in fault.zones_available if z != vm.zone],
        )
    if fault.kind == FaultKind.CREATE_FAILURE:
        return errors.internal_error()
    # GCE names GPU quotas like NVIDIA_L4_GPUS; they are regional.
    return errors.quota_exceeded(gpu_metric(vm.spec), region_of(vm.zone))
