"""The reaper on the local cloud: Firestore emulator, Compute stand-in, Pub/Sub emulator.

The use case is driven with an injected `now` and tiny thresholds; the local cloud's own timer
keeps calling the deployed reaper with default thresholds meanwhile, which the assertions
tolerate (both are the same code, and every job change is guarded by its transaction).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pytest
import requests

from comfyburst.adapters.clock import SystemClock
from comfyburst.domain.reaper import ReaperPolicy
from comfyburst.schema import ResultMessage
from comfyburst.services.dispatch import Dispatcher
from comfyburst.services.reap import ReaperDeps, run_reaper
from comfyburst.services.results import finish
from comfyburst.states import JobState
from tests._completion_helpers import make_job
from tests._poll import poll_until
from tests.test_complete_emulator import pull_all, results_sub  # noqa: F401

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

TINY = ReaperPolicy(boot_timeout_s=1, heartbeat_timeout_s=1, max_attempts=2, dispatch_grace_s=0)


def arm_fault(kind: str) -> None:
    endpoint = os.environ["COMFYBURST_COMPUTE_ENDPOINT"]
    body = {"kind": kind, "count": "always"}
    requests.post(f"{endpoint}/_standin/faults", json=body, timeout=10).raise_for_status()


@pytest.fixture
def deps(function_settings, job_store, fleet, publisher, blob_store, signer):
    clock = SystemClock()
    dispatcher = Dispatcher(job_store, fleet, clock, function_settings)
    yield ReaperDeps(
        job_store,
        fleet,
        publisher,
        clock,
        dispatch=dispatcher.dispatch_many,
        blobs=blob_store,
        signer=signer,
        signals_bucket=function_settings.signals_bucket,
        outputs_bucket=function_settings.outputs_bucket,
    )
    endpoint = os.environ["COMFYBURST_COMPUTE_ENDPOINT"]
    requests.delete(f"{endpoint}/_standin/faults", timeout=10)


def statuses(fleet) -> dict[str, str]:
    return {vm.name: vm.status for vm in fleet.list()}


def test_running_vm_without_a_job_is_stopped(deps, fleet):
    arm_fault("boot_failure")  # the VM runs, but no worker in it (nothing shuts it down)
    vm = fleet.list()[0]
    fleet.start(vm.zone, vm.name, str(uuid.uuid4()))
    seen: list[str] = []

    def ran_or_was_stopped() -> bool:
        # The local cloud's own reaper timer may stop it while it still boots (no lease, no
        # job: nobody's), before this poll ever sees RUNNING.
        seen.append(statuses(fleet)[vm.name])
        booted = any(s != "TERMINATED" for s in seen)
        return "RUNNING" in seen or "STOPPING" in seen or (booted and seen[-1] == "TERMINATED")

    poll_until(ran_or_was_stopped, "the VM to run", timeout_s=15, interval_s=0.05)
    summary = run_reaper(deps, TINY)
    stops = [a for a in summary["actions"] if a["action"] == "StopVm" and a["name"] == vm.name]
    # The local cloud's timer may have stopped it a moment earlier; then our plan has nothing.
    assert all(a["outcome"] in ("applied", "error") for a in stops)
    poll_until(
        lambda: statuses(fleet)[vm.name] == "TERMINATED",
        "the VM to stop",
        timeout_s=15,
        interval_s=0.05,
    )


def test_worker_that_never_starts_is_retried_then_failed(
    deps,
    job_store,
    fleet,
    subscriber,
    results_sub,  # noqa: F811
):
    arm_fault("boot_failure")
    job_id = f"reap-{uuid.uuid4().hex[:10]}"
    job_store.create_job(make_job(job_id, SystemClock().now(), max_attempts=2))
    attempts_seen: set[int] = set()
    deadline = time.monotonic() + 60
    job = job_store.get_job(job_id)
    while not job.state.terminal:
        assert time.monotonic() < deadline, f"job still {job.state.value}"
        # Each period sees a clock a little ahead, so every start has "timed out" at once.
        run_reaper(deps, TINY, now=SystemClock().now() + timedelta(seconds=5))
        job = job_store.get_job(job_id)
        if job.state is JobState.STARTING:
            attempts_seen.add(job.attempt)
        time.sleep(0.2)  # polling period of this driver loop: VMs need time to stop
    assert job.state is JobState.FAILED
    assert job.error.type == "attempts_exhausted"
    assert attempts_seen == {1, 2}
    (message,) = pull_all(subscriber, results_sub, job_id, wait_s=1.0)
    assert isinstance(message, ResultMessage) and message.status is JobState.FAILED
    assert message.attempt == 2
    poll_until(
        lambda: set(statuses(fleet).values()) == {"TERMINATED"},
        "every VM to stop",
        timeout_s=20,
        interval_s=0.1,
    )
    assert all(r.lease is None or r.lease.job_id != job_id for r in job_store.list_vms())


# --- results whose publish failed are published again ---------------------------------------


@pytest.fixture
def private_store(function_settings):
    """A FirestoreJobStore on a collection of its own, which the local cloud's reaper timer
    does not read (it would publish what this test wants to see unpublished)."""
    from comfyburst import wiring

    collection = f"jobs-test-{uuid.uuid4().hex[:10]}"
    return wiring.job_store(function_settings.model_copy(update={"jobs_collection": collection}))


def test_firestore_lists_only_terminal_unpublished_results(private_store):
    now = SystemClock().now()
    unpublished = finish(make_job("t-unpub", now), JobState.CANCELLED, now)
    failed = finish(make_job("t-failed", now, JobState.RUNNING), JobState.FAILED, now)
    published = finish(make_job("t-pub", now), JobState.CANCELLED, now)
    for job in (
        unpublished,
        failed,
        published,
        make_job("live", now, JobState.RUNNING),
        make_job("queued", now),
    ):
        private_store.create_job(job)
    private_store.patch_job("t-pub", {"result_published_at": now})
    listed = private_store.list_unpublished_results()
    assert sorted(j.job_id for j in listed) == ["t-failed", "t-unpub"]
    assert len(private_store.list_unpublished_results(limit=1)) == 1
    by_id = {j.job_id: j for j in listed}
    assert by_id["t-unpub"].result == unpublished.result  # the stored message, to send as is


def test_unpublished_result_is_published_by_the_reaper(
    deps,
    job_store,
    subscriber,
    results_sub,  # noqa: F811
):
    now = SystemClock().now()
    job_id = f"unpub-{uuid.uuid4().hex[:10]}"
    job = finish(make_job(job_id, now), JobState.CANCELLED, now)
    job_store.create_job(job)
    run_reaper(deps, TINY)  # the local cloud's timer may publish it first: both are this code
    poll_until(
        lambda: job_store.get_job(job_id).result_published_at,
        "the publish mark",
        timeout_s=15,
        interval_s=0.05,
    )
    messages = pull_all(subscriber, results_sub, job_id, wait_s=1.0)
    assert messages and all(m == job.result for m in messages)
