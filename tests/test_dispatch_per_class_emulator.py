"""Dispatch per GPU class on the local cloud (Firestore emulator, Compute stand-in, real
adapters): with a backlog on a full class, a newer job of a class whose VM is stopped and free
is started in the reaper's first period."""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from comfyburst.domain.gpu_classes import CLASS_LABEL, GpuClass
from comfyburst.domain.jobs import new_job
from comfyburst.schema import Job, JobRequest
from comfyburst.services.reap import ReaperDeps, policy_from, run_reaper
from comfyburst.states import JobState
from localcloud.compute._config import InstanceSpec
from tests._api_support import WORKFLOW
from tests.test_dispatch_create import US_A, US_B, Pool, make_pool  # noqa: F401

pytestmark = pytest.mark.emulator

TEMPLATE = "global/instanceTemplates/gpu-l4"
FULL = GpuClass(
    name="h100", zones=[US_A], templates={"us-central1": TEMPLATE}, max_vms=1, max_vms_per_zone=1
)
FREE = GpuClass(
    name="t4", zones=[US_B], templates={"us-central1": TEMPLATE}, max_vms=1, max_vms_per_zone=1
)


def _vm(name: str, zone: str, gpu_class: str) -> InstanceSpec:
    return InstanceSpec(
        name=name, zone=zone, labels={"comfyburst-pool": "createtest", CLASS_LABEL: gpu_class}
    )


def _job(pool: Pool, job_id: str, gpu_class: str, seconds: float) -> Job:
    request = JobRequest.model_validate({"workflow": WORKFLOW, "models": []})
    job = new_job(
        job_id=job_id,
        request=request,
        workflow_bytes=100,
        now=pool.clock.now() - timedelta(minutes=1) + timedelta(seconds=seconds),
        max_attempts=3,
        ttl_days=1,
    ).model_copy(update={"gpu_class": gpu_class})
    pool.store.create_job(job)
    return job


def test_a_free_vm_of_its_class_starts_a_newer_job_behind_another_class_backlog(
    make_pool: Callable[..., Pool], publisher: Any
) -> None:
    pool = make_pool(
        [],
        settings={"gpu_classes": [FULL, FREE]},
        instances=[_vm("cb-h100-1", US_A, "h100"), _vm("cb-t4-1", US_B, "t4")],
    )
    # The h100 class's one VM runs its first job; three more h100 jobs queue behind it.
    first = pool.dispatcher.dispatch(_job(pool, "h100-0", "h100", 0))
    assert first.started and first.vm is not None and first.vm.name == "cb-h100-1"
    backlog = [_job(pool, f"h100-{i}", "h100", i) for i in (1, 2, 3)]
    newest = _job(pool, "t4-1", "t4", 10)  # newer than the whole backlog; its VM is free

    deps = ReaperDeps(
        pool.store, pool.fleet, publisher, pool.clock, dispatch=pool.dispatcher.dispatch_many
    )
    policy = dataclasses.replace(policy_from(pool.settings), dispatch_grace_s=0)
    summary = run_reaper(deps, policy)

    dispatched = [a for a in summary["actions"] if a["action"] == "DispatchJob"]
    assert [(a["job_id"], a["outcome"]) for a in dispatched] == [("t4-1", "applied")]
    started = pool.store.get_job(newest.job_id)
    assert started is not None and started.state is JobState.STARTING
    assert started.vm is not None and started.vm.name == "cb-t4-1"
    for job in backlog:  # still waiting for their own class's VM
        stored = pool.store.get_job(job.job_id)
        assert stored is not None and stored.state is JobState.QUEUED and stored.vm is None
