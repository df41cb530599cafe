"""The done flag's job write: one commit under the version read with the flag, and the
transaction when the job changed since that read (issue #26, item 6: the warm path)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from comfyburst.errors import PreconditionFailed
from comfyburst.ports import JobWrite
from comfyburst.services.complete import StorageObject, handle_done_flag
from comfyburst.states import JobState
from tests._completion_helpers import fake_completion_deps, lease_record, make_job, manifest
from tests.fakes import InMemoryJobStore

SIGNALS = "signals-b"
OUTPUTS = "outputs-b"


class _CountingStore(InMemoryJobStore):
    """Counts transactions; `before_commit` runs just before each job commit (a concurrent
    writer landing between the flag's read and its write)."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions = 0
        self.commits = 0
        self.before_commit: Any = None

    def update_job(self, job_id: str, mutate: Any) -> Any:
        self.transactions += 1
        return super().update_job(job_id, mutate)

    def commit(self, vms: Any, job: Any = None) -> Any:
        if job is not None:
            self.commits += 1
            if self.before_commit is not None:
                hook, self.before_commit = self.before_commit, None
                hook()
        return super().commit(vms, job)


def _deps() -> tuple[Any, Any, _CountingStore]:
    deps, clock = fake_completion_deps(SIGNALS, OUTPUTS)
    store = _CountingStore()
    deps = type(deps)(**{**deps.__dict__, "store": store})
    job = make_job("j1", clock.now(), JobState.RUNNING)
    store.create_job(job)
    store.put_vm(lease_record("gpu-1", "j1", clock.now()), None)
    return deps, clock, store


def _flag(deps: Any, clock: Any) -> StorageObject:
    name = "jobs/j1/done.json"
    body = manifest("j1", clock.now(), outputs=[("a.png", b"png-a")]).model_dump_json().encode()
    return StorageObject(SIGNALS, name, deps.blobs.write(SIGNALS, name, body), len(body))


def test_an_unchanged_job_ends_in_one_commit_without_a_transaction() -> None:
    deps, clock, store = _deps()
    clock.advance(30)
    outcome = handle_done_flag(deps, _flag(deps, clock))
    assert outcome["outcome"] == "completed"
    assert store.commits == 1 and store.transactions == 0
    job = store.get_job("j1")
    assert job is not None and job.state is JobState.SUCCEEDED
    assert job.result_published_at is not None
    assert [o.name for o in job.outputs] == ["a.png"]


def test_a_job_written_since_the_read_is_decided_again_and_keeps_that_write() -> None:
    deps, clock, store = _deps()
    clock.advance(30)
    beat = clock.now()
    store.before_commit = lambda: store.patch_job("j1", {"heartbeat_at": beat})
    outcome = handle_done_flag(deps, _flag(deps, clock))
    assert outcome["outcome"] == "completed"
    assert store.transactions == 1
    job = store.get_job("j1")
    assert job is not None and job.state is JobState.SUCCEEDED
    assert job.heartbeat_at == beat  # not overwritten by the write prepared before it


def test_a_job_cancelled_since_the_read_stays_cancelled() -> None:
    deps, clock, store = _deps()
    clock.advance(30)

    def cancel() -> None:
        store.update_job(
            "j1", lambda j: j.model_copy(update={"state": JobState.CANCELLED, "outputs": []})
        )

    store.before_commit = cancel
    outcome = handle_done_flag(deps, _flag(deps, clock))
    assert outcome["state"] == JobState.CANCELLED.value  # as the transaction found it
    job = store.get_job("j1")
    assert job is not None and job.state is JobState.CANCELLED and job.outputs == []


@pytest.mark.emulator
def test_firestore_read_job_version_guards_the_commit(job_store) -> None:
    job_id = uuid.uuid4().hex
    assert job_store.read_job(job_id) == (None, None)
    job = make_job(job_id, datetime.now(UTC).replace(microsecond=0), JobState.RUNNING)
    job_store.create_job(job)
    read, version = job_store.read_job(job_id)
    assert read == job and version is not None
    job_store.patch_job(job_id, {"heartbeat_at": datetime.now(UTC)})
    with pytest.raises(PreconditionFailed):
        job_store.commit([], JobWrite(job, version))
    fresh, fresh_version = job_store.read_job(job_id)
    _, written = job_store.commit([], JobWrite(fresh, fresh_version))
    assert job_store.read_job(job_id)[1] == written
