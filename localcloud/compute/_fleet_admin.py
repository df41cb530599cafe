"""The fleet's faults, counters and admin calls (snapshot, reset, close): a mixin of Fleet."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from localcloud.compute import _errors as errors
from localcloud.compute._config import Capacity, Fault
from localcloud.compute._fleet_host import FleetHost
from localcloud.compute._resources import TERMINATED, new_fingerprint

if TYPE_CHECKING:
    from localcloud.compute._guest import Guest
    from localcloud.compute._metadata_server import MetadataServer


class AdminMixin(FleetHost):
    """Faults, counters, snapshot, reset and close of a Fleet."""

    def add_faults(self, faults: list[Fault]) -> list[Fault]:
        """Arm faults; they are consumed in the order added."""
        with self.cond:
            return self._faults.add(faults)

    def faults(self) -> list[Fault]:
        """The armed faults."""
        with self.cond:
            return self._faults.list()

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self.cond:
            self._faults.clear()

    def capacity(self) -> Capacity:
        """The zone capacity and regional GPU quota in force."""
        with self.cond:
            return Capacity(
                zone_capacity_vms=dict(self.config.zone_capacity_vms),
                region_gpu_quota=dict(self.config.region_gpu_quota),
            )

    def set_capacity(self, capacity: Capacity) -> Capacity:
        """Replace zone capacity and regional quota from now on; VMs already up stay up (as
        when a zone runs out: only the next start or insert meets the stockout)."""
        known = self.config.known_zones()
        unknown = sorted(set(capacity.zone_capacity_vms) - known) if self.config.zones else []
        if unknown:
            raise errors.invalid("zone_capacity_vms", ",".join(unknown), "No such zone.")
        with self.cond:
            self.config = self.config.model_copy(
                update={
                    "zone_capacity_vms": dict(capacity.zone_capacity_vms),
                    "region_gpu_quota": dict(capacity.region_gpu_quota),
                }
            )
            self.cond.notify_all()
        return self.capacity()

    def snapshot(self) -> list[dict[str, Any]]:
        """Every VM's state, for tests and the CLI."""
        with self.cond:
            return [vm.admin_view(self.config.log_dir) for vm in self._vms.values()]

    def stats(self) -> dict[str, Any]:
        """Counters since start or reset: VMs created, deleted, preempted; billed seconds of
        every VM, the deleted ones included (GCE bills RUNNING and STOPPING time)."""
        with self.cond:
            billed = self._deleted_billed_s + sum(v.running_seconds() for v in self._vms.values())
            return {**self._counters, "billed_s": round(billed, 3)}

    def reset(self) -> None:
        """Power off every VM at once, delete the inserted ones, empty metadata, disarm
        faults, abort operations, zero the counters."""
        aborted = errors.GceError(409, "ABORTED", "The Compute stand-in was reset.")
        with self.cond:
            victims: list[tuple[Guest | None, MetadataServer | None]] = []
            for key, vm in list(self._vms.items()):
                victims.append((vm.guest, vm.metadata_server))
                for op in vm.pending_ops:
                    op.finish(aborted)
                vm.pending_ops = []
                vm.deleting = False
                if vm.status == TERMINATED:
                    vm.generation += 1
                else:
                    self._set_terminated(vm)
                if key not in self._configured:
                    del self._vms[key]
                    continue
                vm.metadata_items, vm.fingerprint = [], new_fingerprint()
                vm.exit_code = vm.guest_error = None
                vm.boot_failure = vm.staging_hang = vm.preempted = False
            for op in self._ops.values():
                op.finish(aborted)
            self._faults.clear()
            self._counters = dict.fromkeys(self._counters, 0)
            self._deleted_billed_s = 0.0
        self._kill_all(victims)

    def _kill_all(self, victims: list[tuple[Guest | None, MetadataServer | None]]) -> None:
        def kill(guest: Guest | None, server: MetadataServer | None) -> None:
            if guest is not None:
                guest.terminate(self.config.stop_grace_s)
            if server is not None:
                server.close()

        threads = [threading.Thread(target=kill, args=v, daemon=True) for v in victims]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def close(self) -> None:
        """End every guest and metadata server; pending timers do nothing afterwards."""
        self._closing.set()
        with self.cond:
            for timer in list(self._timers):
                timer.cancel()
            self._timers.clear()
        self.reset()
        with self.cond:
            self.cond.notify_all()
