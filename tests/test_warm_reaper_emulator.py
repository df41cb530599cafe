"""Warm schedules on the local cloud (Firestore emulator, Compute stand-in), `now` injected:
inside a window the reaper starts a stopped VM, leased to its drain marker so nobody takes it
while it boots; outside, an idle warm VM is stopped while a VM held by a plain drain stays.

The local cloud's own reaper timer (no schedule) runs meanwhile: it leaves a drain-leased VM
alone, and may stop the warm VM before this test's run does; either way only the warm stop
writes the stop marker the assertions look for.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from typing import Any

import pytest
import requests

from comfyburst.adapters.clock import SystemClock
from comfyburst.domain import gpu_classes
from comfyburst.domain.gpu_classes import GpuClasses
from comfyburst.domain.reaper import DRAIN_LEASE_PREFIX, ReaperPolicy, warm_lease_id
from comfyburst.domain.warm import DAY_NAMES, WarmWindow
from comfyburst.schema import Lease, VmRecord
from comfyburst.services.reap import ReaperDeps, run_reaper
from tests._poll import poll_until

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@pytest.fixture
def deps(job_store: Any, fleet: Any, publisher: Any) -> Any:
    endpoint = os.environ["COMFYBURST_COMPUTE_ENDPOINT"]
    # The VMs run with no worker in them: nothing but the reaper changes their lease or state.
    body = {"kind": "boot_failure", "count": "always"}
    requests.post(f"{endpoint}/_standin/faults", json=body, timeout=10).raise_for_status()
    yield ReaperDeps(job_store, fleet, publisher, SystemClock())
    requests.delete(f"{endpoint}/_standin/faults", timeout=10)


def _policy(settings: Any, window: WarmWindow) -> ReaperPolicy:
    base = gpu_classes.for_settings(settings)
    warm = tuple(c.model_copy(update={"warm": [window]}) for c in base.classes)
    return ReaperPolicy(
        boot_timeout_s=600,
        heartbeat_timeout_s=600,
        max_attempts=2,
        dispatch_grace_s=0,
        classes=GpuClasses(warm, base.default, base.fallback),
    )


def _window(days: str, vms: int) -> WarmWindow:
    raw = {"days": days, "from": "00:00", "to": "24:00", "time_zone": "UTC", "vms": vms}
    return WarmWindow.model_validate(raw)


def _statuses(fleet: Any) -> dict[str, str]:
    return {vm.name: vm.status for vm in fleet.list()}


def _lease_id(store: Any, name: str) -> str | None:
    record, _ = store.get_vm(name)
    return record.lease.job_id if record is not None and record.lease is not None else None


def _running(fleet: Any, name: str) -> None:
    zone = next(vm.zone for vm in fleet.list() if vm.name == name)
    fleet.start(zone, name, str(uuid.uuid4()))
    poll_until(lambda: _statuses(fleet)[name] == "RUNNING", f"{name} to run", timeout_s=30)


def _lease(store: Any, name: str, zone: str, job_id: str, ttl_s: float) -> None:
    record, version = store.get_vm(name)
    lease = Lease(job_id=job_id, expires_at=SystemClock().now() + timedelta(seconds=ttl_s))
    base = record or VmRecord(name=name, zone=zone)
    store.put_vm(base.model_copy(update={"lease": lease}), version)


def test_inside_the_window_a_stopped_vm_starts_warm(deps, fleet, job_store, function_settings):
    poll_until(lambda: "TERMINATED" in _statuses(fleet).values(), "a stopped VM", timeout_s=30)
    up = sum(s in ("PROVISIONING", "STAGING", "RUNNING") for s in _statuses(fleet).values())
    now = SystemClock().now()
    policy = _policy(function_settings, _window("daily", up + 1))
    summary = run_reaper(deps, policy, now)
    starts = [a for a in summary["actions"] if a["action"] == "StartWarmVm"]
    assert [a["outcome"] for a in starts] == ["applied"], summary["actions"]
    name = starts[0]["name"]
    assert _lease_id(job_store, name) == f"{DRAIN_LEASE_PREFIX}{name}"
    poll_until(lambda: _statuses(fleet)[name] == "RUNNING", "the warm VM to run", timeout_s=30)
    zone = next(vm.zone for vm in fleet.list() if vm.name == name)
    fleet.stop(zone, name, str(uuid.uuid4()))


def test_outside_the_window_the_idle_warm_vm_stops_a_drained_one_stays(
    deps, fleet, job_store, function_settings
):
    poll_until(
        lambda: list(_statuses(fleet).values()).count("TERMINATED") >= 2,
        "two stopped VMs",
        timeout_s=30,
    )
    warm_vm, drained_vm = sorted(n for n, s in _statuses(fleet).items() if s == "TERMINATED")[:2]
    zones = {vm.name: vm.zone for vm in fleet.list()}
    # Drain-leased first, so the local cloud's reaper never sees them running without a lease;
    # the warm one is leased warm once up (that reaper, with no schedule, stops warm VMs).
    for name in (warm_vm, drained_vm):
        _lease(job_store, name, zones[name], f"{DRAIN_LEASE_PREFIX}{name}", 300)
        _running(fleet, name)
    _lease(job_store, warm_vm, zones[warm_vm], warm_lease_id(warm_vm), 300)

    now = SystemClock().now()
    closed = DAY_NAMES[(now.weekday() + 3) % 7]  # neither today nor yesterday: closed now
    summary = run_reaper(deps, _policy(function_settings, _window(closed, 1)), now)
    mine = [a for a in summary["actions"] if a.get("name") in (warm_vm, drained_vm)]
    assert all(a["name"] == warm_vm and a["action"] == "StopWarmVm" for a in mine), mine
    poll_until(
        lambda: _statuses(fleet)[warm_vm] == "TERMINATED", "the warm VM to stop", timeout_s=30
    )
    assert _lease_id(job_store, warm_vm) == f"{DRAIN_LEASE_PREFIX}stop:{warm_vm}"
    assert _statuses(fleet)[drained_vm] == "RUNNING"
    assert _lease_id(job_store, drained_vm) == f"{DRAIN_LEASE_PREFIX}{drained_vm}"
    fleet.stop(zones[drained_vm], drained_vm, str(uuid.uuid4()))
