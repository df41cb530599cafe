"""The VM state machine: start/stop/setMetadata, operations, requestId dedupe, faults, guests.

insert/delete/preemption live in `_fleet_pool`, faults and admin calls in `_fleet_admin`.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from localcloud.compute import _capacity
from localcloud.compute import _errors as errors
from localcloud.compute._config import ComputeStandinConfig, FaultKind
from localcloud.compute._faults import FaultBook, fault_error
from localcloud.compute._filter import compile_filter
from localcloud.compute._fleet_admin import AdminMixin
from localcloud.compute._fleet_pool import PoolMixin
from localcloud.compute._guest import Guest, guest_env
from localcloud.compute._metadata_server import MetadataServer, instance_tree
from localcloud.compute._resources import (
    PROVISIONING,
    RUNNING,
    STAGING,
    STOPPING,
    TERMINATED,
    Operation,
    Vm,
    new_fingerprint,
    now_rfc3339,
    zone_path,
)
from localcloud.compute._templates import TemplateBook

_METADATA_MAX_BYTES = 512 * 1024
_BOOTING = (PROVISIONING, STAGING, RUNNING)


class Fleet(PoolMixin, AdminMixin):
    """All VMs of one stand-in; every mutation happens under `cond`."""

    def __init__(self, config: ComputeStandinConfig) -> None:
        self.config = config
        self.cond = threading.Condition()
        self._vms = {
            (s.zone, s.name): Vm(config.project, s, s.guest or config.guest)
            for s in config.instances
        }
        self._configured = set(self._vms)
        self._templates = TemplateBook(config.project, config.templates)
        self._ops: dict[str, Operation] = {}
        self._by_request: dict[str, Operation] = {}
        self._faults = FaultBook()
        self._timers: set[threading.Timer] = set()
        self._closing = threading.Event()
        self._counters = {"created": 0, "deleted": 0, "preempted": 0, "started": 0}
        self._deleted_billed_s = 0.0
        self._preemption_rate_per_s = 0.0
        self._preempter: threading.Thread | None = None
        if config.spot_preemption_rate_per_s:
            self.set_preemption_rate(config.spot_preemption_rate_per_s)

    # --- lookups -------------------------------------------------------------------------

    def _check_project(self, project: str) -> None:
        if project != self.config.project:
            raise errors.not_found(f"projects/{project}")

    def _vm(self, project: str, zone: str, name: str) -> Vm:
        self._check_project(project)
        vm = self._vms.get((zone, name))
        if vm is None:
            raise errors.not_found(f"{zone_path(project, zone)}/instances/{name}")
        return vm

    def get_instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        """GET instances/{name}."""
        with self.cond:
            return self._vm(project, zone, name).to_json()

    def list_instances(
        self, project: str, zone: str | None, filter_text: str | None
    ) -> dict[str, list[dict[str, Any]]]:
        """Matching instances grouped by zone (every configured zone, maybe empty)."""
        self._check_project(project)
        predicate = compile_filter(filter_text)
        with self.cond:
            grouped: dict[str, list[dict[str, Any]]] = {zone: []} if zone else {}
            for vm in self._vms.values():
                if zone in (None, vm.zone):
                    body = vm.to_json()
                    matched = grouped.setdefault(vm.zone, [])
                    if predicate(body):
                        matched.append(body)
            return grouped

    def _op(self, project: str, zone: str, name: str) -> Operation:
        self._check_project(project)
        op = self._ops.get(name)
        if op is None or op.zone != zone:
            raise errors.not_found(f"{zone_path(project, zone)}/operations/{name}")
        return op

    def get_operation(self, project: str, zone: str, name: str) -> dict[str, Any]:
        """GET operations/{op}."""
        with self.cond:
            return self._op(project, zone, name).to_json()

    def wait_operation(self, project: str, zone: str, name: str) -> dict[str, Any]:
        """POST operations/{op}/wait: hold until DONE or the server's wait limit."""
        deadline = time.monotonic() + self.config.operation_wait_max_s
        with self.cond:
            op = self._op(project, zone, name)
            while not op.done and not self._closing.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            return op.to_json()

    # --- mutations -----------------------------------------------------------------------

    def _deduped(
        self, project: str, request_id: str | None, action: Callable[[], Operation]
    ) -> dict[str, Any]:
        if request_id is not None:
            try:
                valid = uuid.UUID(request_id).int != 0
            except ValueError:
                valid = False
            if not valid:
                raise errors.invalid(
                    "requestId",
                    request_id,
                    "The request ID must be a valid UUID with the exception that zero UUID "
                    "is not supported (00000000-0000-0000-0000-000000000000).",
                )
        with self.cond:
            key = f"{project}/{request_id}"
            if request_id is not None and key in self._by_request:
                return self._by_request[key].to_json()
            op = action()
            self._ops[op.name] = op
            if request_id is not None:
                self._by_request[key] = op
            self.cond.notify_all()
            return op.to_json()

    def start(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """POST instances/{name}/start."""
        return self._deduped(project, request_id, lambda: self._start(project, zone, name))

    def _start(self, project: str, zone: str, name: str) -> Operation:
        vm = self._vm(project, zone, name)
        op = Operation(project, zone, "start", vm)
        if vm.status in _BOOTING and not vm.deleting:
            op.finish()
            return op
        if vm.status != TERMINATED:
            raise errors.not_ready(vm.path)
        for kind in (FaultKind.QUOTA, FaultKind.STOCKOUT):
            fault = self._faults.take(kind, vm)
            if fault is None:
                continue
            error = fault_error(fault, vm)
            if fault.mode == "sync" or kind == FaultKind.QUOTA:
                raise error
            # The operation is accepted, then fails; the VM never leaves TERMINATED.
            self._schedule(self.config.staging_s, None, functools.partial(op.finish, error))
            return op
        vms = list(self._vms.values())
        refused = _capacity.quota(self.config, vms, vm) or _capacity.stockout(self.config, vms, vm)
        if refused is not None:
            raise refused
        self._counters["started"] += 1
        self._begin_boot(vm, op)
        return op

    def _begin_boot(self, vm: Vm, op: Operation) -> None:
        """PROVISIONING -> STAGING -> RUNNING on timers; `op` finishes at RUNNING."""
        vm.boot_failure = self._faults.take(FaultKind.BOOT_FAILURE, vm) is not None
        vm.staging_hang = self._faults.take(FaultKind.STAGING_HANG, vm) is not None
        vm.generation += 1
        vm.status, vm.pending_ops = PROVISIONING, [op]
        vm.exit_code = vm.guest_error = None
        vm.preempted = False
        # Chained, not two timers: under load, timer threads may run out of order.
        half_s = self.config.staging_s / 2
        self._schedule(half_s, vm, lambda: self._stage(vm, half_s))

    def _stage(self, vm: Vm, delay_s: float) -> None:
        vm.status = STAGING
        if not vm.staging_hang:  # a hung VM stays here until stopped or deleted
            self._schedule(delay_s, vm, lambda: self._boot(vm))

    def stop(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """POST instances/{name}/stop."""
        return self._deduped(project, request_id, lambda: self._stop(project, zone, name))

    def _stop(self, project: str, zone: str, name: str) -> Operation:
        vm = self._vm(project, zone, name)
        op = Operation(project, zone, "stop", vm)
        if vm.deleting:
            raise errors.not_ready(vm.path)
        if vm.status == TERMINATED:
            op.finish()
        elif vm.status == STOPPING:
            vm.pending_ops.append(op)
        else:
            self._power_off_async(vm, [op], self.config.stop_grace_s)
        return op

    def _power_off_async(self, vm: Vm, ops: list[Operation], grace_s: float) -> None:
        """STOPPING now; the guest gets SIGTERM, SIGKILL after `grace_s`; then TERMINATED."""
        for interrupted in vm.pending_ops:
            if interrupted not in ops:
                interrupted.finish()
        vm.generation += 1
        vm.status, vm.pending_ops = STOPPING, list(ops)
        threading.Thread(
            target=self._power_off,
            args=(vm, vm.generation, vm.guest, vm.metadata_server, grace_s),
            name=f"stop-{vm.name}",
            daemon=True,
        ).start()

    def set_metadata(
        self,
        project: str,
        zone: str,
        name: str,
        body: dict[str, Any] | None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """POST instances/{name}/setMetadata with `{fingerprint, items}`."""
        return self._deduped(
            project, request_id, lambda: self._set_metadata(project, zone, name, body or {})
        )

    def _set_metadata(self, project: str, zone: str, name: str, body: dict[str, Any]) -> Operation:
        vm = self._vm(project, zone, name)
        if body.get("fingerprint") != vm.fingerprint:
            raise errors.fingerprint_mismatch()
        items: list[dict[str, str]] = []
        for item in body.get("items") or []:
            key, value = item.get("key"), item.get("value", "")
            if not isinstance(key, str) or not key or any(i["key"] == key for i in items):
                raise errors.invalid("metadata.items.key", str(key), "Duplicate or empty key.")
            items.append({"key": key, "value": str(value)})
        size = sum(len(i["key"]) + len(i["value"].encode()) for i in items)
        if size > _METADATA_MAX_BYTES:
            raise errors.invalid("metadata", f"{size} bytes", "Metadata exceeds 512 KB.")
        vm.metadata_items, vm.fingerprint = items, new_fingerprint()
        op = Operation(project, zone, "setMetadata", vm)
        op.finish()
        return op

    # --- transitions (run on timers and worker threads) ----------------------------------

    def _schedule(self, delay_s: float, vm: Vm | None, action: Callable[[], None]) -> None:
        # With a VM, the action is void once the VM moved on to another transition.
        generation = vm.generation if vm else 0

        def fire() -> None:
            with self.cond:
                self._timers.discard(timer)
                if self._closing.is_set() or (vm and vm.generation != generation):
                    return
                action()
                self.cond.notify_all()

        timer = threading.Timer(delay_s, fire)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _boot(self, vm: Vm) -> None:
        vm.status, vm.last_start_at = RUNNING, now_rfc3339()
        vm.running_since = time.monotonic()
        vm.metadata_server = MetadataServer(self._tree_fn(vm), self.cond)
        spec = vm.guest_spec
        if spec is not None and not vm.boot_failure:
            env = guest_env(
                os.environ if spec.inherit_env else None, spec.env, vm.metadata_server.address
            )
            log_path = self.config.log_dir / f"{vm.name}.log"
            try:
                vm.guest = Guest(spec.argv, env, log_path, self._guest_exited_cb(vm))
            except OSError as exc:
                # A guest that cannot start is a VM that halts at boot; say why in the log.
                vm.guest_error = f"{type(exc).__name__}: {exc}"
                with open(log_path, "a") as log:
                    log.write(f"--- localcloud compute: guest failed to start: {exc}\n")
                vm.metadata_server.close()
                self._set_terminated(vm)
                return
        for op in vm.pending_ops:
            op.finish()
        vm.pending_ops = []

    def _tree_fn(self, vm: Vm) -> Callable[[], dict[str, Any]]:
        config = self.config
        return lambda: instance_tree(
            project=config.project,
            project_number=config.project_number,
            name=vm.name,
            zone=vm.zone,
            instance_id=vm.id,
            machine_type=vm.spec.machine_type,
            attributes=vm.attributes(),
            sa_email=config.sa_email,
            preempted=vm.preempted,
        )

    def _guest_exited_cb(self, vm: Vm) -> Callable[[Guest, int], None]:
        def exited(guest: Guest, code: int) -> None:
            with self.cond:
                if vm.guest is not guest:
                    return
                vm.exit_code = code
                if vm.status != RUNNING:
                    return  # a stop is under way and finishes the transition
                # The guest halted the VM (like `shutdown -h now`): TERMINATED, no stop call.
                server = vm.metadata_server
                self._set_terminated(vm)
            if server is not None:
                server.close()

        return exited

    def _power_off(
        self,
        vm: Vm,
        generation: int,
        guest: Guest | None,
        server: MetadataServer | None,
        grace_s: float,
    ) -> None:
        started = time.monotonic()
        if guest is not None:
            guest.terminate(grace_s)
        if server is not None:
            server.close()
        self._closing.wait(max(0.0, self.config.stopping_s - (time.monotonic() - started)))
        with self.cond:
            if vm.generation == generation:
                self._set_terminated(vm)

    def _set_terminated(self, vm: Vm) -> None:
        vm.generation += 1
        vm.status, vm.last_stop_at = TERMINATED, now_rfc3339()
        if vm.running_since is not None:
            vm.billed_s += time.monotonic() - vm.running_since
            vm.running_since = None
        vm.guest, vm.metadata_server = None, None
        for op in vm.pending_ops:
            op.finish()
        vm.pending_ops = []
        if vm.deleting:
            self._remove(vm)
        self.cond.notify_all()
