"""Fair share and `max_running` on the local cloud (Firestore emulator, Compute stand-in, the
real reaper and dispatcher): a caller's one job queued behind another caller's backlog starts
first, and a caller at its running limit waits while others start."""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from comfyburst.domain.caller_limits import CallerLimits, Limits
from comfyburst.domain.gpu_classes import CLASS_LABEL, GpuClass
from comfyburst.domain.jobs import new_job
from comfyburst.schema import Job, JobRequest
from comfyburst.services.reap import ReaperDeps, policy_from, run_reaper
from comfyburst.states import JobState
from localcloud.compute._config import InstanceSpec
from tests._api_support import WORKFLOW
from tests.test_dispatch_create import US_B, Pool, make_pool  # noqa: F401

pytestmark = pytest.mark.emulator

TEMPLATE = "global/instanceTemplates/gpu-l4"


def _class(vms: int) -> GpuClass:
    # As many VMs as the stand-in holds, all made: the class cannot create, only reuse.
    return GpuClass(
        name="t4",
        zones=[US_B],
        templates={"us-central1": TEMPLATE},
        max_vms=vms,
        max_vms_per_zone=vms,
    )


def _vms(n: int) -> list[InstanceSpec]:
    labels = {"comfyburst-pool": "createtest", CLASS_LABEL: "t4"}
    return [InstanceSpec(name=f"cb-t4-{i}", zone=US_B, labels=labels) for i in range(n)]


def _job(pool: Pool, job_id: str, caller: str, seconds: float) -> Job:
    request = JobRequest.model_validate({"workflow": WORKFLOW, "models": []})
    job = new_job(
        job_id=job_id,
        request=request,
        workflow_bytes=100,
        now=pool.clock.now() - timedelta(minutes=1) + timedelta(seconds=seconds),
        max_attempts=3,
        ttl_days=1,
        caller=caller,
    ).model_copy(update={"gpu_class": "t4"})
    pool.store.create_job(job)
    return job


def _reap(pool: Pool, publisher: Any) -> list[tuple[str, str]]:
    deps = ReaperDeps(
        pool.store, pool.fleet, publisher, pool.clock, dispatch=pool.dispatcher.dispatch_many
    )
    policy = dataclasses.replace(policy_from(pool.settings), dispatch_grace_s=0)
    summary = run_reaper(deps, policy)
    return [(a["job_id"], a["outcome"]) for a in summary["actions"] if a["action"] == "DispatchJob"]


def _state(pool: Pool, job_id: str) -> JobState:
    stored = pool.store.get_job(job_id)
    assert stored is not None
    return stored.state


def test_one_job_behind_another_callers_backlog_starts_first(
    make_pool: Callable[..., Pool], publisher: Any
) -> None:
    pool = make_pool([], settings={"gpu_classes": [_class(3)]}, instances=_vms(3))
    # Caller A queued 8 jobs; 2 of them got VMs. B's one job comes after all of A's.
    a_jobs = [_job(pool, f"a-{i}", "key:a", i) for i in range(8)]
    for job in a_jobs[:2]:
        assert pool.dispatcher.dispatch(job).started
    b_job = _job(pool, "b-0", "key:b", 20)

    # One VM is free: first come, first served would give it to a-2.
    assert _reap(pool, publisher) == [("b-0", "applied")]
    assert _state(pool, b_job.job_id) is JobState.STARTING
    for job in a_jobs[2:]:
        assert _state(pool, job.job_id) is JobState.QUEUED


def test_a_caller_at_max_running_waits_and_others_start(
    make_pool: Callable[..., Pool], publisher: Any
) -> None:
    limits = CallerLimits(callers={"key:a": Limits(max_running=2)})
    pool = make_pool(
        [], settings={"gpu_classes": [_class(4)], "caller_limits": limits}, instances=_vms(4)
    )
    a_jobs = [_job(pool, f"a-{i}", "key:a", i) for i in range(5)]
    for job in a_jobs[:2]:
        assert pool.dispatcher.dispatch(job).started

    # Two VMs free, A at its limit of 2: nothing of A's is dispatched, nor refused.
    assert _reap(pool, publisher) == []
    b_job = _job(pool, "b-0", "key:b", 20)
    assert _reap(pool, publisher) == [("b-0", "applied")]
    assert _state(pool, b_job.job_id) is JobState.STARTING
    for job in a_jobs[2:]:
        assert _state(pool, job.job_id) is JobState.QUEUED


def test_with_nobody_running_the_free_vm_goes_to_the_caller_served_least_recently(
    make_pool: Callable[..., Pool], publisher: Any
) -> None:
    from tests._completion_helpers import make_job

    pool = make_pool([], settings={"gpu_classes": [_class(1)]}, instances=_vms(1))
    # H's last job ran a moment ago and ended; H queued 3 before L's one. Nobody runs now.
    done = make_job("h-done", pool.clock.now() - timedelta(seconds=30), JobState.SUCCEEDED)
    pool.store.create_job(done.model_copy(update={"caller": "key:h", "gpu_class": "t4"}))
    h_jobs = [_job(pool, f"h-{i}", "key:h", i) for i in range(3)]
    l_job = _job(pool, "l-0", "key:l", 20)

    # Oldest first (and the tie on running alone) would give the one VM to h-0.
    assert _reap(pool, publisher) == [("l-0", "applied")]
    assert _state(pool, l_job.job_id) is JobState.STARTING
    for job in h_jobs:
        assert _state(pool, job.job_id) is JobState.QUEUED
