"""Draining VMs racing for queued jobs, and creators racing for a class's slots, on the
Firestore emulator: precondition writes, no transactions, so a loser learns at once and
nothing it wrote survives (issue #14: the claim and slot contention the scale run found)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfyburst.adapters.clock import SystemClock
from comfyburst.domain.scheduling import REASON_POOL_FULL
from comfyburst.ports import SlotRequest
from comfyburst.schema import Lease, VmRecord, VmRef
from comfyburst.states import JobState
from comfyburst_worker.claims import TAKEN, LeaseKeeper, VmClass, queued_claim
from tests._completion_helpers import make_job
from tests._concurrency import at_once

pytestmark = pytest.mark.emulator

CLOCK = SystemClock()
ANY = VmClass("default", default="default")


def _vm() -> VmRef:
    return VmRef(name=f"vm-{uuid.uuid4().hex[:8]}", zone="zone-a")


def _queued(job_store: Any) -> str:
    job_id = uuid.uuid4().hex
    job_store.create_job(make_job(job_id, CLOCK.now(), vm=None))
    return job_id


def test_vms_racing_for_one_job_one_gets_it_the_others_write_nothing(job_store: Any) -> None:
    job_id = _queued(job_store)
    vms = [_vm() for _ in range(6)]
    keepers = [LeaseKeeper(job_store, vm, CLOCK, 60) for vm in vms]

    def take(i: int) -> Any:
        return keepers[i].take(job_id, None, queued_claim(vms[i], CLOCK, ANY))

    results = at_once(len(vms), take)
    winners = [i for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1, results
    winner = vms[winners[0]]
    job = job_store.get_job(job_id)
    assert job.state is JobState.RUNNING and job.vm.name == winner.name
    for i, vm in enumerate(vms):
        record, _ = job_store.get_vm(vm.name)
        if i == winners[0]:
            assert record.lease.job_id == job_id
        else:  # the lease and the job went in one commit: the loser's lease was never written
            assert record is None


def test_a_vm_leased_to_another_job_is_taken_and_the_job_stays_queued(job_store: Any) -> None:
    job_id, vm = _queued(job_store), _vm()
    lease = Lease(job_id="dispatchers-job", expires_at=CLOCK.now() + timedelta(minutes=5))
    job_store.put_vm(VmRecord(name=vm.name, zone=vm.zone, lease=lease), None)
    keeper = LeaseKeeper(job_store, vm, CLOCK, 60)

    assert keeper.take(job_id, "drain:x", queued_claim(vm, CLOCK, ANY)) is TAKEN
    assert job_store.get_job(job_id).state is JobState.QUEUED
    record, _ = job_store.get_vm(vm.name)
    assert record.lease.job_id == "dispatchers-job"


def test_a_job_changed_after_the_read_is_not_claimed_and_the_lease_not_moved(
    job_store: Any,
) -> None:
    job_id, vm = _queued(job_store), _vm()
    drain = Lease(job_id=f"drain:{vm.name}", expires_at=CLOCK.now() + timedelta(minutes=5))
    job_store.put_vm(VmRecord(name=vm.name, zone=vm.zone, lease=drain), None)

    class CancelledMeanwhile:
        """The store, but the job is cancelled between the claim's read and its commit."""

        def __getattr__(self, name: str) -> Any:
            return getattr(job_store, name)

        def read_for_lease(self, vm_name: str, wanted: str) -> Any:
            read = job_store.read_for_lease(vm_name, wanted)
            job_store.patch_job(wanted, {"cancel_requested": True})
            return read

    keeper = LeaseKeeper(CancelledMeanwhile(), vm, CLOCK, 60)  # type: ignore[arg-type]
    assert keeper.take(job_id, drain.job_id, queued_claim(vm, CLOCK, ANY)) is None
    job = job_store.get_job(job_id)
    assert job.state is JobState.QUEUED and job.cancel_requested
    record, _ = job_store.get_vm(vm.name)
    assert record.lease.job_id == drain.job_id  # the drain marker holds the VM still


def test_concurrent_creators_get_exactly_the_class_limit_of_slots(job_store: Any) -> None:
    gpu_class, limit, creators = f"class-{uuid.uuid4().hex[:6]}", 3, 10
    now = datetime.now(UTC)

    def reserve(i: int) -> str | None:
        return job_store.reserve_slot(  # type: ignore[no-any-return]
            SlotRequest(gpu_class, f"vm-{i}", "zone-a", limit, limit, {}, now, now)
        )

    results = at_once(creators, reserve)
    granted = [i for i, r in enumerate(results) if r is None]
    assert len(granted) == limit, results
    assert all(r == REASON_POOL_FULL for r in results if r is not None)
    # Released slots are reserved again; the others still count.
    job_store.release_slot(gpu_class, f"vm-{granted[0]}")
    assert reserve(99) is None
    assert reserve(100) == REASON_POOL_FULL
