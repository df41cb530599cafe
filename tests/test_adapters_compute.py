"""ComputeFleet against the Compute stand-in."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from comfyburst.domain.reaper import DRAIN_LEASE_PREFIX
from comfyburst.errors import CapacityError, PreconditionFailed
from comfyburst.schema import Lease, VmRecord
from tests._poll import poll_until

pytestmark = pytest.mark.emulator


def arm(localcloud_env, **fault) -> None:
    url = f"{localcloud_env['COMFYBURST_COMPUTE_ENDPOINT']}/_standin/faults"
    requests.post(url, json=fault, timeout=10).raise_for_status()


def wait_status(fleet, zone: str, name: str, status: str) -> None:
    poll_until(lambda: fleet.get(zone, name).status == status, f"{name} to be {status}")


def test_list_finds_the_pool_in_both_zones(fleet, function_settings) -> None:
    vms = fleet.list()
    assert len(vms) >= 2
    assert {vm.zone for vm in vms} == set(function_settings.pool_zones)
    key, value = function_settings.pool_label_pair()
    assert all(vm.labels.get(key) == value for vm in vms)
    assert all(vm.status == "TERMINATED" for vm in vms)


def _held(function_settings: Any, vm: Any) -> Callable[[], None]:
    """Lease the VM as a draining worker holds it, so the session cloud's reaper (every 2 s)
    does not stop an unleased VM it sees booting as nobody's; returns the give-back."""
    from comfyburst import wiring

    store = wiring.job_store(function_settings)
    record, version = store.get_vm(vm.name)
    base = record or VmRecord(name=vm.name, zone=vm.zone)
    expires = datetime.now(UTC) + timedelta(seconds=60)  # past the test, and gone by itself
    lease = Lease(job_id=f"{DRAIN_LEASE_PREFIX}{vm.name}", expires_at=expires)
    held = store.put_vm(base.model_copy(update={"lease": lease}), version)

    def give_back() -> None:
        with contextlib.suppress(PreconditionFailed):  # its worker wrote it since: it expires
            store.put_vm(base.model_copy(update={"lease": None}), held)

    return give_back


def test_set_metadata_then_start_and_stop(fleet, function_settings) -> None:
    vm = fleet.list()[0]
    give_back = _held(function_settings, vm)
    fleet.set_metadata(vm.zone, vm.name, {"job-id": "j1"}, vm.fingerprint, str(uuid.uuid4()))
    current = fleet.get(vm.zone, vm.name)
    assert current.metadata["job-id"] == "j1"
    fleet.set_metadata(vm.zone, vm.name, {"other": "x"}, None, str(uuid.uuid4()))
    assert fleet.get(vm.zone, vm.name).metadata == {"job-id": "j1", "other": "x"}
    with pytest.raises(PreconditionFailed):
        fleet.set_metadata(vm.zone, vm.name, {"job-id": "j2"}, vm.fingerprint, str(uuid.uuid4()))
    op = fleet.start(vm.zone, vm.name, str(uuid.uuid4()))
    assert op
    wait_status(fleet, vm.zone, vm.name, "RUNNING")
    assert fleet.operation_error(vm.zone, op) is None
    fleet.stop(vm.zone, vm.name, str(uuid.uuid4()))
    wait_status(fleet, vm.zone, vm.name, "TERMINATED")
    give_back()


def test_stockout_is_a_capacity_error(fleet, localcloud_env) -> None:
    vm = fleet.list()[0]
    arm(localcloud_env, kind="stockout", zone=vm.zone)
    with pytest.raises(CapacityError) as caught:
        fleet.start(vm.zone, vm.name, str(uuid.uuid4()))
    assert caught.value.reason == "ZONE_RESOURCE_POOL_EXHAUSTED"


def test_quota_is_a_capacity_error(fleet, localcloud_env) -> None:
    vm = fleet.list()[0]
    arm(localcloud_env, kind="quota", zone=vm.zone)
    with pytest.raises(CapacityError) as caught:
        fleet.start(vm.zone, vm.name, str(uuid.uuid4()))
    assert caught.value.reason == "QUOTA_EXCEEDED"


def test_stockout_in_the_operation_is_reported_by_operation_error(fleet, localcloud_env) -> None:
    vm = fleet.list()[0]
    arm(localcloud_env, kind="stockout", zone=vm.zone, mode="operation")
    op = fleet.start(vm.zone, vm.name, str(uuid.uuid4()))
    code = poll_until(lambda: fleet.operation_error(vm.zone, op), "the operation's error")
    assert code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert fleet.get(vm.zone, vm.name).status == "TERMINATED"


def test_start_while_stopping_is_not_ready(fleet, function_settings) -> None:
    vm = fleet.list()[0]
    give_back = _held(function_settings, vm)
    fleet.start(vm.zone, vm.name, str(uuid.uuid4()))
    wait_status(fleet, vm.zone, vm.name, "RUNNING")
    fleet.stop(vm.zone, vm.name, str(uuid.uuid4()))
    if fleet.get(vm.zone, vm.name).status != "STOPPING":
        pytest.skip("the VM stopped before the second call could see STOPPING")
    with pytest.raises(CapacityError) as caught:
        fleet.start(vm.zone, vm.name, str(uuid.uuid4()))
    assert caught.value.reason == "RESOURCE_NOT_READY"
    wait_status(fleet, vm.zone, vm.name, "TERMINATED")
    give_back()
