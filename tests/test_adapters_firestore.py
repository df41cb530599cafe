"""FirestoreJobStore against the Firestore emulator."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from comfyburst.errors import NotFound, PreconditionFailed
from comfyburst.schema import Job, JobError, Lease, Progress, RequestSummary, VmRecord
from comfyburst.states import JobState

pytestmark = pytest.mark.emulator

T0 = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def make_job(job_id: str | None = None, key: str | None = None, at: datetime = T0) -> Job:
    summary = RequestSummary(
        node_count=1, class_types=["SaveImage"], models=[], input_names=[], workflow_bytes=10
    )
    return Job(
        job_id=job_id or uuid.uuid4().hex,
        request=summary,
        created_at=at,
        deadline_at=at + timedelta(minutes=30),
        state_changed_at=at,
        idempotency_key=key,
    )


def test_job_round_trips_with_timestamps(job_store) -> None:
    job = make_job().model_copy(update={"error": None, "heartbeat_at": T0 + timedelta(seconds=1)})
    _, created = job_store.create_job(job)
    assert created
    loaded = job_store.get_job(job.job_id)
    assert loaded == job
    assert type(loaded.created_at) is datetime
    assert loaded.created_at.tzinfo is not None


def test_job_datetimes_are_firestore_timestamps(job_store, function_settings) -> None:
    from google.cloud import firestore

    job = make_job()
    job_store.create_job(job)
    raw = (
        firestore.Client(project=function_settings.project_id)
        .collection(function_settings.jobs_collection)
        .document(job.job_id)
        .get()
        .to_dict()
    )
    # A timestamp comes back as a datetime; a string would mean the ISO form was stored.
    assert isinstance(raw["created_at"], datetime)
    assert raw["state"] == "queued"


def test_create_with_the_same_key_returns_the_earlier_job(job_store) -> None:
    first = make_job(key="order-42")
    second = make_job(key="order-42")
    assert job_store.create_job(first) == (first, True)
    again, created = job_store.create_job(second)
    assert not created
    assert again.job_id == first.job_id
    assert job_store.get_job(second.job_id) is None


def test_key_with_slash_is_stored_safely(job_store) -> None:
    first = make_job(key="a/b/../c")
    job_store.create_job(first)
    again, created = job_store.create_job(make_job(key="a/b/../c"))
    assert (again.job_id, created) == (first.job_id, False)


def test_update_job_applies_the_mutation(job_store) -> None:
    job = make_job()
    job_store.create_job(job)
    updated = job_store.update_job(
        job.job_id, lambda j: j.model_copy(update={"state": JobState.STARTING})
    )
    assert updated.state is JobState.STARTING
    assert job_store.get_job(job.job_id).state is JobState.STARTING


def test_update_job_that_raises_writes_nothing(job_store) -> None:
    job = make_job()
    job_store.create_job(job)

    def boom(current: Job) -> Job:
        raise RuntimeError("mutation refused")

    with pytest.raises(RuntimeError, match="mutation refused"):
        job_store.update_job(job.job_id, boom)
    assert job_store.get_job(job.job_id) == job


def test_update_unknown_job_is_not_found(job_store) -> None:
    with pytest.raises(NotFound):
        job_store.update_job("nope", lambda j: j)


def test_two_contending_writers_both_count(job_store) -> None:
    job = make_job()
    job_store.create_job(job)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def bump(current: Job) -> Job:
        progress = current.progress.model_copy(update={"value": current.progress.value + 1})
        return current.model_copy(update={"progress": progress})

    def writer() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(2):
                job_store.update_job(job.job_id, bump)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors
    assert job_store.get_job(job.job_id).progress.value == 4


def test_patch_job_merges_dotted_fields(job_store) -> None:
    job = make_job()
    job_store.create_job(job)
    beat = T0 + timedelta(seconds=5)
    job_store.patch_job(job.job_id, {"progress.value": 3, "progress.max": 9, "heartbeat_at": beat})
    loaded = job_store.get_job(job.job_id)
    assert loaded.progress == Progress(value=3, max=9)
    assert loaded.heartbeat_at == beat
    with pytest.raises(ValueError):
        job_store.patch_job(job.job_id, {"state": "running"})
    with pytest.raises(NotFound):
        job_store.patch_job("missing", {"progress.value": 1})


def test_patch_job_accepts_models(job_store) -> None:
    job = make_job()
    job_store.create_job(job)
    job_store.patch_job(job.job_id, {"error": JobError(type="x", message="m")})
    assert job_store.get_job(job.job_id).error == JobError(type="x", message="m")


def test_list_jobs_filters_by_state_oldest_first(job_store) -> None:
    newer = make_job(at=T0 + timedelta(seconds=10))
    older = make_job(at=T0)
    running = make_job(at=T0 - timedelta(seconds=10)).model_copy(update={"state": JobState.RUNNING})
    for job in (newer, older, running):
        job_store.create_job(job)
    queued = job_store.list_jobs([JobState.QUEUED])
    assert [j.job_id for j in queued] == [older.job_id, newer.job_id]
    both = job_store.list_jobs([JobState.QUEUED, JobState.RUNNING], limit=2)
    assert [j.job_id for j in both] == [running.job_id, older.job_id]
    assert job_store.list_jobs([]) == []


def test_put_vm_create_twice_fails(job_store) -> None:
    vm = VmRecord(name="gpu-a", zone="us-central1-a")
    version = job_store.put_vm(vm, None)
    assert version is not None
    with pytest.raises(PreconditionFailed):
        job_store.put_vm(vm, None)


def test_put_vm_with_a_stale_version_fails(job_store) -> None:
    vm = VmRecord(name="gpu-b", zone="us-central1-a")
    job_store.put_vm(vm, None)
    record, version = job_store.get_vm("gpu-b")
    assert record == vm
    leased = vm.model_copy(update={"lease": Lease(job_id="j1", expires_at=T0)})
    new_version = job_store.put_vm(leased, version)
    assert job_store.get_vm("gpu-b")[0] == leased
    with pytest.raises(PreconditionFailed):
        job_store.put_vm(vm, version)  # someone wrote since `version` was read
    job_store.put_vm(vm, new_version)
    assert job_store.get_vm("gpu-b")[0].lease is None
    assert [v.name for v in job_store.list_vms()] == ["gpu-b"]
    assert job_store.get_vm("absent") == (None, None)
