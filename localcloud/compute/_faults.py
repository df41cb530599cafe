"""Armed faults and the GCE errors they turn into."""

from __future__ import annotations

from localcloud.compute import _errors as errors
from localcloud.compute._config import Fault, FaultKind
from localcloud.compute._resources import Vm, zone_path


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


def fault_error(kind: FaultKind, vm: Vm) -> errors.GceError:
    """The error GCE answers for a stockout or quota fault on `vm`."""
    if kind == FaultKind.STOCKOUT:
        return errors.stockout(zone_path(vm.project, vm.zone))
    accelerator = vm.spec.accelerator_type
    # GCE names GPU quotas like NVIDIA_L4_GPUS; they are regional.
    metric = (
        f"NVIDIA_{accelerator.removeprefix('nvidia-').upper().replace('-', '_')}_GPUS"
        if accelerator and vm.spec.accelerator_count
        else "CPUS"
    )
    return errors.quota_exceeded(metric, vm.zone.rsplit("-", 1)[0])
