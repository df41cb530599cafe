"""The draining worker's claim keeps to fair share and `max_running` (domain/fair_share.py, the
dispatcher's rule), on the Firestore emulator with the worker's real agent and store."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from comfyburst import wiring
from comfyburst.adapters.clock import SystemClock
from comfyburst.schema import Job, VmRef
from comfyburst.states import JobState
from tests._completion_helpers import make_job
from tests._worker_support import local_config, local_settings, make_agent
from tests.fakes import InMemoryBlobStore

pytestmark = pytest.mark.emulator

VM = VmRef(name="cb-drain-0", zone="zone-a")


@pytest.fixture
def store(function_settings: Any) -> Any:
    suffix = uuid.uuid4().hex[:8]
    return wiring.job_store(
        function_settings.model_copy(
            update={
                "jobs_collection": f"fair_jobs_{suffix}",
                "vms_collection": f"fair_vms_{suffix}",
            }
        )
    )


def _put(store: Any, job_id: str, caller: str, seconds: int, state: JobState) -> Job:
    # Created a minute ago and on: the claim's deadline check passes.
    at = SystemClock().now() - timedelta(minutes=1) + timedelta(seconds=seconds)
    vm = f"cb-other-{job_id}" if state is not JobState.QUEUED else None
    # Submit records the resolved class on every job.
    job = make_job(job_id, at, state, vm=vm).model_copy(
        update={"caller": caller, "gpu_class": "default"}
    )
    store.create_job(job)
    return job


def _agent(store: Any, tmp_path: Path, vm: VmRef = VM, **config: Any) -> Any:
    settings = local_settings("http://127.0.0.1:9", tmp_path / "models")
    return make_agent(settings, local_config(**config), store, InMemoryBlobStore(), vm)


def _state(store: Any, job_id: str) -> JobState:
    stored = store.get_job(job_id)
    assert stored is not None
    return stored.state


def test_a_draining_vm_takes_the_job_of_the_caller_running_fewest(
    store: Any, tmp_path: Path
) -> None:
    for i in range(2):
        _put(store, f"a-run-{i}", "key:a", i, JobState.RUNNING)
    a_queued = [_put(store, f"a-{i}", "key:a", 10 + i, JobState.QUEUED) for i in range(6)]
    _put(store, "b-0", "key:b", 30, JobState.QUEUED)

    claimed = _agent(store, tmp_path)._claim_next(None)
    assert claimed is not None and claimed.job_id == "b-0"  # FIFO would take one of a's
    assert claimed.state is JobState.RUNNING and claimed.vm is not None
    assert claimed.vm.name == VM.name
    assert all(_state(store, j.job_id) is JobState.QUEUED for j in a_queued)


def test_a_draining_vm_leaves_a_caller_at_max_running_queued(store: Any, tmp_path: Path) -> None:
    for i in range(2):
        _put(store, f"a-run-{i}", "key:a", i, JobState.RUNNING)
    a_queued = [_put(store, f"a-{i}", "key:a", 10 + i, JobState.QUEUED) for i in range(3)]
    agent = _agent(store, tmp_path, running_limits={"key:a": 2})

    assert agent._claim_next(None) is None  # A's jobs wait; nothing else is queued
    assert all(_state(store, j.job_id) is JobState.QUEUED for j in a_queued)
    _put(store, "b-0", "key:b", 30, JobState.QUEUED)
    claimed = agent._claim_next(None)
    assert claimed is not None and claimed.job_id == "b-0"


def test_a_caller_behind_a_backlog_longer_than_the_listing_is_still_seen(
    store: Any, tmp_path: Path
) -> None:
    # 45 of A's jobs queued first: more than the draining worker lists (the oldest 40).
    for i in range(45):
        _put(store, f"a-{i:02d}", "key:a", i, JobState.QUEUED)
    _put(store, "b-0", "key:b", 50, JobState.QUEUED)
    _put(store, "c-0", "key:c", 51, JobState.QUEUED)

    heads = store.queued_heads("default", 16)
    assert [(j.caller, j.job_id) for j in heads] == [
        ("key:a", "a-00"),
        ("key:b", "b-0"),
        ("key:c", "c-0"),
    ]
    assert [j.job_id for j in store.queued_heads("default", 2)] == ["a-00", "b-0"]
    # A's first claim went to A (a tie at none running: the oldest); A now runs one, so B's
    # and C's jobs, past the listing, come next.
    agent = _agent(store, tmp_path)
    first = agent._claim_next(None)
    assert first is not None and first.caller == "key:a"
    other_vm = VmRef(name="cb-drain-1", zone="zone-a")
    second = _agent(store, tmp_path / "2", other_vm)._claim_next(None)
    assert second is not None and second.job_id == "b-0"


def test_a_draining_vm_after_the_heavy_callers_job_takes_the_light_callers_next(
    store: Any, tmp_path: Path
) -> None:
    # One VM in the class: it just ran H's job, which is already `succeeded` when it looks
    # for the next, so nobody runs anything. H queued 5 first, L one after: L's goes next.
    _put(store, "h-done", "key:h", 0, JobState.SUCCEEDED)
    h_queued = [_put(store, f"h-{i}", "key:h", 10 + i, JobState.QUEUED) for i in range(5)]
    _put(store, "l-0", "key:l", 30, JobState.QUEUED)

    agent = _agent(store, tmp_path)
    claimed = agent._claim_next("h-done")
    assert claimed is not None and claimed.job_id == "l-0"  # FIFO (and the old tie) took h-0
    assert all(_state(store, j.job_id) is JobState.QUEUED for j in h_queued)


def test_a_draining_vm_takes_the_caller_served_longest_ago_even_with_younger_jobs(
    store: Any, tmp_path: Path
) -> None:
    # H's last job started before L's; L's queued job is the oldest: H's goes next all the same.
    _put(store, "h-done", "key:h", 0, JobState.SUCCEEDED)
    _put(store, "l-done", "key:l", 5, JobState.SUCCEEDED)
    _put(store, "l-0", "key:l", 8, JobState.QUEUED)
    for i in range(3):
        _put(store, f"h-{i}", "key:h", 10 + i, JobState.QUEUED)

    claimed = _agent(store, tmp_path)._claim_next("l-done")
    assert claimed is not None and claimed.caller == "key:h"  # oldest first would take l-0
    assert _state(store, "l-0") is JobState.QUEUED


def test_last_started_answers_each_callers_latest_start_in_the_class(store: Any) -> None:
    _put(store, "a-old", "key:a", 0, JobState.SUCCEEDED)
    newest = _put(store, "a-new", "key:a", 5, JobState.RUNNING)
    _put(store, "a-queued", "key:a", 9, JobState.QUEUED)  # never started: null started_at
    other = make_job("a-other", SystemClock().now(), JobState.SUCCEEDED, vm="cb-x")
    store.create_job(other.model_copy(update={"caller": "key:a", "gpu_class": "l4"}))
    _put(store, "b-queued", "key:b", 7, JobState.QUEUED)

    found = store.last_started("default", ["key:a", "key:b", "key:none"])
    assert found == {"key:a": newest.started_at}  # not l4's later start; B never served
    assert store.last_started("l4", ["key:a"]) == {"key:a": other.started_at}
    # Jobs of an API without auth have no caller: `caller == null` finds them too.
    anon = make_job("n-done", SystemClock().now(), JobState.SUCCEEDED, vm="cb-y")
    store.create_job(anon.model_copy(update={"gpu_class": "default"}))
    assert store.last_started("default", [None]) == {None: anon.started_at}
