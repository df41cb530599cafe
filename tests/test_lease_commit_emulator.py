"""The lease and the job in one Firestore commit, on the emulator: all or nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from comfyburst.domain.jobs import transition
from comfyburst.errors import JobExists, PreconditionFailed
from comfyburst.ports import JobWrite, LeaseWrite
from comfyburst.schema import Lease, VmRecord, VmRef
from comfyburst.states import JobState
from tests._completion_helpers import make_job

pytestmark = pytest.mark.emulator

NOW = datetime.now(UTC).replace(microsecond=0)


def _leased(name: str, job_id: str) -> VmRecord:
    lease = Lease(job_id=job_id, expires_at=NOW + timedelta(minutes=15))
    return VmRecord(name=name, zone="zone-a", lease=lease)


def _starting(job_id: str, vm: str, key: str | None = None):  # type: ignore[no-untyped-def]
    queued = make_job(job_id, NOW, vm=None).model_copy(update={"idempotency_key": key})
    return transition(
        queued, JobState.STARTING, NOW, vm=VmRef(name=vm, zone="zone-a"), dispatched_at=NOW
    )


def _idempotency_docs(job_store, function_settings) -> list[str]:  # type: ignore[no-untyped-def]
    collection = job_store._client.collection(function_settings.idempotency_collection)
    return [snap.id for snap in collection.stream()]


def test_one_commit_writes_the_lease_the_job_and_its_key(job_store, function_settings) -> None:
    job_id, vm = uuid.uuid4().hex, f"vm-{uuid.uuid4().hex[:6]}"
    read = job_store.read_for_lease(vm, job_id)
    assert read.record is None and read.job is None
    job = _starting(job_id, vm, key="k-one")
    versions, job_version = job_store.commit(
        [LeaseWrite(_leased(vm, job_id), read.record_version)], JobWrite(job, None)
    )
    again = job_store.read_for_lease(vm, job_id)
    assert again.record.lease.job_id == job_id and again.job == job
    assert again.record_version == versions[0] and again.job_version == job_version
    assert _idempotency_docs(job_store, function_settings) == ["k-one"]
    # The next commit goes under both versions: the job back to queued, the lease released.
    queued = job.model_copy(update={"state": JobState.QUEUED, "vm": None})
    released = again.record.model_copy(update={"lease": None})
    job_store.commit([LeaseWrite(released, versions[0])], JobWrite(queued, job_version))
    final = job_store.read_for_lease(vm, job_id)
    assert final.record.lease is None and final.job.state is JobState.QUEUED


def test_a_lost_lease_precondition_leaves_no_job_and_no_key(job_store, function_settings) -> None:
    job_id, vm = uuid.uuid4().hex, f"vm-{uuid.uuid4().hex[:6]}"
    # Another dispatcher leased the VM after our read (we read it absent: create-if-absent).
    job_store.put_vm(_leased(vm, "someone-else"), None)
    with pytest.raises(PreconditionFailed) as raised:
        job_store.commit(
            [LeaseWrite(_leased(vm, job_id), None)], JobWrite(_starting(job_id, vm, "k-x"), None)
        )
    assert not isinstance(raised.value, JobExists)
    assert job_store.get_job(job_id) is None
    assert _idempotency_docs(job_store, function_settings) == []
    assert job_store.get_vm(vm)[0].lease.job_id == "someone-else"
    # A stale version (the document changed since it was read) is refused the same way.
    _, version = job_store.get_vm(vm)
    job_store.put_vm(VmRecord(name=vm, zone="zone-a"), version)
    with pytest.raises(PreconditionFailed):
        job_store.commit(
            [LeaseWrite(_leased(vm, job_id), version)], JobWrite(_starting(job_id, vm), None)
        )
    assert job_store.get_job(job_id) is None and job_store.get_vm(vm)[0].lease is None


def test_a_job_stored_already_is_answered_and_its_lease_not_taken(job_store) -> None:
    job_id, vm, other = uuid.uuid4().hex, f"vm-{uuid.uuid4().hex[:6]}", f"vm-{uuid.uuid4().hex[:6]}"
    first = _starting(job_id, vm, key="k-same")
    job_store.commit([LeaseWrite(_leased(vm, job_id), None)], JobWrite(first, None))
    # A retried submit that missed the job in its read: the commit fails as a whole.
    with pytest.raises(JobExists) as raised:
        job_store.commit(
            [LeaseWrite(_leased(other, job_id), None)],
            JobWrite(_starting(job_id, other, "k-same"), None),
        )
    assert raised.value.job == first
    assert job_store.get_vm(other) == (None, None)


def test_a_job_changed_since_its_read_is_not_overwritten(job_store) -> None:
    job_id, vm = uuid.uuid4().hex, f"vm-{uuid.uuid4().hex[:6]}"
    job_store.create_job(make_job(job_id, NOW, vm=None))
    read = job_store.read_for_lease(vm, job_id)
    job_store.update_job(job_id, lambda j: j.model_copy(update={"cancel_requested": True}))
    starting = transition(
        read.job, JobState.STARTING, NOW, vm=VmRef(name=vm, zone="zone-a"), dispatched_at=NOW
    )
    with pytest.raises(PreconditionFailed):
        job_store.commit(
            [LeaseWrite(_leased(vm, job_id), None)], JobWrite(starting, read.job_version)
        )
    assert job_store.get_vm(vm) == (None, None)  # no lease without the job's move
    stored = job_store.get_job(job_id)
    assert stored.state is JobState.QUEUED and stored.cancel_requested
