"""Creating, deleting and preempting VMs: instances.insert (from a template), delete,
simulateMaintenanceEvent, and random Spot preemption in chaos. A mixin of Fleet."""

from __future__ import annotations

import random
import threading
from typing import Any

from localcloud.compute import _capacity
from localcloud.compute import _errors as errors
from localcloud.compute._config import FaultKind
from localcloud.compute._faults import fault_error
from localcloud.compute._fleet_host import FleetHost
from localcloud.compute._resources import (
    PROVISIONING,
    RUNNING,
    STAGING,
    STOPPING,
    TERMINATED,
    Operation,
    Vm,
    zone_path,
)
from localcloud.compute._templates import spec_from_template

# How often the chaos loop draws preemptions.
_PREEMPT_TICK_S = 0.25


class PoolMixin(FleetHost):
    """insert / delete / preempt of a Fleet."""

    def insert(
        self,
        project: str,
        zone: str,
        body: dict[str, Any] | None,
        template: str | None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """POST instances (optionally ?sourceInstanceTemplate=...)."""
        return self._deduped(
            project, request_id, lambda: self._insert(project, zone, body or {}, template)
        )

    def _insert(
        self, project: str, zone: str, body: dict[str, Any], template_ref: str | None
    ) -> Operation:
        self._check_project(project)
        if zone not in self.config.known_zones():
            raise errors.not_found(zone_path(project, zone))
        if template_ref:
            template = self._templates.resolve(template_ref, zone)
        elif body.get("machineType"):
            template = {"properties": {"machineType": body["machineType"]}, "selfLink": None}
        else:
            raise errors.invalid(
                "resource.machineType", "", "Give a machineType or a sourceInstanceTemplate."
            )
        spec = spec_from_template(template, zone, body)
        if (zone, spec.name) in self._vms:
            raise errors.already_exists(f"{zone_path(project, zone)}/instances/{spec.name}")
        vm = Vm(project, spec, spec.guest or self.config.guest)
        vm.metadata_items = [{"key": k, "value": v} for k, v in spec.metadata.items()]
        vm.status = PROVISIONING
        op = Operation(project, zone, "insert", vm)
        failure, asynchronous = self._insert_failure(vm)
        if failure is not None and not asynchronous:
            raise failure
        self._vms[(zone, spec.name)] = vm
        self._counters["created"] += 1
        if failure is not None:
            # Accepted, then the operation fails and the instance is gone, as GCE does.
            vm.pending_ops = [op]
            self._schedule(
                self.config.staging_s / 2, vm, lambda: self._fail_insert(vm, op, failure)
            )
            return op
        self._begin_boot(vm, op)
        return op

    def insert_template(
        self, project: str, region: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """instanceTemplates.insert (global or regional); the operation is DONE at once."""
        self._check_project(project)
        with self.cond:
            stored = self._templates.insert(region, body)
        return {
            "kind": "compute#operation",
            "name": f"operation-template-{stored['id']}",
            "operationType": "insert",
            "status": "DONE",
            "progress": 100,
            "targetLink": stored["selfLink"],
            "targetId": stored["id"],
        }

    def get_template(self, project: str, region: str | None, name: str) -> dict[str, Any]:
        """instanceTemplates.get."""
        self._check_project(project)
        with self.cond:
            return self._templates.get(region, name)

    def _insert_failure(self, vm: Vm) -> tuple[errors.GceError | None, bool]:
        """(the error this insert meets, whether it fails the operation rather than the call)."""
        for kind in (FaultKind.QUOTA, FaultKind.STOCKOUT, FaultKind.CREATE_FAILURE):
            fault = self._faults.take(kind, vm)
            if fault is not None:
                return fault_error(fault, vm), kind != FaultKind.QUOTA and (
                    fault.mode == "operation" or kind == FaultKind.CREATE_FAILURE
                )
        vms = list(self._vms.values())
        quota = _capacity.quota(self.config, vms, vm)
        if quota is not None:
            return quota, False
        stockout = _capacity.stockout(self.config, vms, vm)
        return stockout, self.config.insert_stockout_mode == "operation"

    def _fail_insert(self, vm: Vm, op: Operation, error: errors.GceError) -> None:
        op.finish(error)
        self._remove(vm)

    def delete(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """DELETE instances/{name}: power off (if up), then the VM and its disk are gone."""
        return self._deduped(project, request_id, lambda: self._delete(project, zone, name))

    def _delete(self, project: str, zone: str, name: str) -> Operation:
        vm = self._vm(project, zone, name)
        op = Operation(project, zone, "delete", vm)
        if vm.deleting:
            vm.pending_ops.append(op)
            return op
        vm.deleting = True
        if vm.status == TERMINATED:
            vm.generation += 1
            vm.status, vm.pending_ops = STOPPING, [op]
            self._schedule(self.config.stopping_s, vm, lambda: self._set_terminated(vm))
            return op
        self._power_off_async(vm, [op], self.config.stop_grace_s)
        return op

    def _remove(self, vm: Vm) -> None:
        if self._vms.get((vm.zone, vm.name)) is vm:
            del self._vms[(vm.zone, vm.name)]
            self._counters["deleted"] += 1
            self._deleted_billed_s += vm.running_seconds()
        vm.generation += 1

    def simulate_maintenance_event(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """POST instances/{name}/simulateMaintenanceEvent: a Spot VM is preempted; a standard
        VM (onHostMaintenance TERMINATE, no automatic restart) is shut down."""
        return self._deduped(project, request_id, lambda: self._simulate(project, zone, name))

    def _simulate(self, project: str, zone: str, name: str) -> Operation:
        vm = self._vm(project, zone, name)
        op = Operation(project, zone, "simulateMaintenanceEvent", vm)
        if vm.status not in (STAGING, RUNNING) or vm.deleting:
            raise errors.not_ready(vm.path)
        if vm.spec.provisioning_model == "SPOT":
            self._preempt(vm)
        else:
            self._power_off_async(vm, [], self.config.stop_grace_s)
        op.finish()
        return op

    def preempt(self, zone: str, name: str) -> bool:
        """Preempt a RUNNING Spot VM now (admin and chaos); False when it is not one."""
        with self.cond:
            vm = self._vms.get((zone, name))
            if vm is None or vm.status != RUNNING or vm.spec.provisioning_model != "SPOT":
                return False
            self._preempt(vm)
            self.cond.notify_all()
            return True

    def _preempt(self, vm: Vm) -> None:
        # GCE's order: `instance/preempted` turns TRUE, the guest gets the ACPI soft-off
        # (SIGTERM here), and the VM is powered off hard after the Spot grace period.
        vm.preempted = True
        self._counters["preempted"] += 1
        op = Operation(vm.project, vm.zone, "compute.instances.preempted", vm, user="system")
        self._ops[op.name] = op
        if vm.spec.termination_action == "DELETE":
            vm.deleting = True
        for interrupted in vm.pending_ops:
            interrupted.finish()
        vm.generation += 1
        vm.status, vm.pending_ops = STOPPING, [op]
        grace_s = self.config.spot_shutdown_grace_s
        self._schedule(
            self.config.spot_signal_delay_s,
            vm,
            lambda: self._power_off_async(vm, vm.pending_ops, grace_s),
        )
        self.cond.notify_all()

    def set_preemption_rate(self, rate_per_s: float) -> None:
        """Preempt RUNNING Spot VMs at random at this rate (chaos); 0 stops it."""
        with self.cond:
            self._preemption_rate_per_s = max(0.0, rate_per_s)
            if self._preemption_rate_per_s and self._preempter is None:
                preempter = threading.Thread(
                    target=self._preempt_at_random, name="spot-preempter", daemon=True
                )
                self._preempter = preempter
                preempter.start()

    def _preempt_at_random(self) -> None:
        rng = random.Random(self.config.chaos_seed)
        while not self._closing.wait(_PREEMPT_TICK_S):
            with self.cond:
                chance = self._preemption_rate_per_s * _PREEMPT_TICK_S
                for vm in list(self._vms.values()):
                    spot = vm.spec.provisioning_model == "SPOT"
                    if spot and vm.status == RUNNING and rng.random() < chance:
                        self._preempt(vm)
