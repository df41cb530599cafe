"""The reaper executor on in-memory fakes, with the real dispatch service and an injected `now`."""

from __future__ import annotations

import pytest

from comfyburst.domain.reaper import ReaperPolicy
from comfyburst.errors import NotFound
from comfyburst.schema import ResultMessage
from comfyburst.services.complete import StorageObject, handle_done_flag
from comfyburst.services.dispatch import Dispatcher
from comfyburst.services.reap import ReaperDeps, policy_from, run_reaper
from comfyburst.services.results import finish
from comfyburst.settings import FunctionSettings
from comfyburst.states import JobState
from tests._completion_helpers import lease_record, make_job, manifest
from tests.fakes import (
    FakeFleet,
    FakeSigner,
    FixedClock,
    InMemoryBlobStore,
    InMemoryJobStore,
    InMemoryPublisher,
)

# No dispatch grace: these tests dispatch in the period a job is queued (the grace has its own).
POLICY = ReaperPolicy(boot_timeout_s=10, heartbeat_timeout_s=10, max_attempts=2, dispatch_grace_s=0)


def _settings() -> FunctionSettings:
    return FunctionSettings(
        project_id="p",
        jobs_bucket="j",
        outputs_bucket="o",
        signals_bucket="s",
        results_topic="r",
        pool_zones=["zone-a"],
        boot_timeout_s=10,
        heartbeat_timeout_s=10,
        max_attempts=2,
    )


@pytest.fixture
def env():
    clock = FixedClock()
    store, fleet, publisher = (
        InMemoryJobStore(),
        FakeFleet([("gpu-1", "zone-a"), ("gpu-2", "zone-a")]),
        InMemoryPublisher(),
    )
    dispatcher = Dispatcher(store, fleet, clock, _settings())
    deps = ReaperDeps(
        store,
        fleet,
        publisher,
        clock,
        dispatch=dispatcher.dispatch_many,
        blobs=InMemoryBlobStore(),
        signer=FakeSigner(),
        signals_bucket="s",
        outputs_bucket="o",
    )
    return deps, clock


def _run(deps, clock, advance_s=0.0):
    clock.advance(advance_s)
    return run_reaper(deps, POLICY)


def test_policy_from_settings():
    policy = policy_from(_settings())
    assert (policy.boot_timeout_s, policy.heartbeat_timeout_s, policy.max_attempts) == (10, 10, 2)
    assert policy.dispatch_grace_s == 10.0  # FunctionSettings' default
    assert policy_from(_settings().model_copy(update={"dispatch_grace_s": 1.5})).dispatch_grace_s


def test_orphan_running_vm_is_stopped(env):
    deps, clock = env
    deps.fleet.start("zone-a", "gpu-1", "r")
    summary = _run(deps, clock)
    assert summary["counts"] == {"StopVm:applied": 1}
    assert deps.fleet.get("zone-a", "gpu-1").status == "TERMINATED"


def test_worker_that_never_claims_is_retried_then_failed(env):
    deps, clock = env
    deps.store.create_job(make_job("j1", clock.now(), max_attempts=3))
    _run(deps, clock)  # dispatch: the reaper is the scheduler's safety net
    job = deps.store.get_job("j1")
    assert job.state is JobState.STARTING and job.attempt == 1
    first_vm = job.vm.name

    summary = _run(deps, clock, 10)  # boot timeout: requeue (attempt 2) and dispatch again
    assert summary["counts"]["RequeueJob:applied"] == 1
    assert ("stop", first_vm) in deps.fleet.calls
    job = deps.store.get_job("j1")
    assert job.state is JobState.STARTING and job.attempt == 2  # retried in the same period

    summary = _run(deps, clock, 10)  # attempts spent (policy caps at 2)
    assert summary["counts"]["FailJob:applied"] == 1
    job = deps.store.get_job("j1")
    assert job.state is JobState.FAILED and job.error.type == "attempts_exhausted"
    assert job.result_published_at == clock.now()
    ((body, attributes),) = deps.publisher.messages
    assert attributes == {"job_id": "j1", "status": "failed"}
    assert ResultMessage.model_validate_json(body).attempt == 2
    assert all(vm.status == "TERMINATED" for vm in deps.fleet.list())
    assert all(r.lease is None for r in deps.store.list_vms())
    assert _run(deps, clock, 10)["counts"] == {}  # quiet afterwards


def test_conflicting_change_is_skipped_and_keeps_the_vm(env):
    deps, clock = env
    job = make_job("j1", clock.now(), JobState.STARTING)
    deps.store.create_job(job)
    deps.store.put_vm(lease_record("gpu-1", "j1", clock.now()), None)
    deps.fleet.start("zone-a", "gpu-1", "r")
    clock.advance(10)
    real_update = deps.store.update_job

    def worker_claims_first(job_id, mutate):
        # The worker's claim lands between the reaper's snapshot and its transaction.
        real_update(
            job_id,
            lambda j: j.model_copy(update={"state": JobState.RUNNING, "heartbeat_at": clock.now()}),
        )
        deps.store.update_job = real_update
        return real_update(job_id, mutate)

    deps.store.update_job = worker_claims_first
    summary = run_reaper(deps, POLICY)
    outcomes = {a["action"]: a["outcome"] for a in summary["actions"]}
    assert outcomes == {
        "RequeueJob": "skipped",
        "StopVm": "skipped",
        "ReleaseLease": "skipped",
        "DispatchJob": "skipped",  # the dispatcher finds the job running, not queued
    }
    assert deps.store.get_job("j1").state is JobState.RUNNING
    assert deps.fleet.get("zone-a", "gpu-1").status == "RUNNING"


def test_one_failing_action_does_not_stop_the_others(env):
    deps, clock = env
    for name in ("gpu-1", "gpu-2"):
        deps.fleet.start("zone-a", name, "r")
    real_stop = deps.fleet.stop

    def stop(zone, name, request_id):
        if name == "gpu-1":
            raise RuntimeError("compute says no")
        return real_stop(zone, name, request_id)

    deps.fleet.stop = stop
    summary = _run(deps, clock)
    assert summary["counts"] == {"StopVm:error": 1, "StopVm:applied": 1}
    assert deps.fleet.get("zone-a", "gpu-2").status == "TERMINATED"


def test_timeout_publishes_and_stops(env):
    deps, clock = env
    deps.store.create_job(make_job("j1", clock.now(), JobState.RUNNING, timeout_s=60))
    deps.store.put_vm(lease_record("gpu-1", "j1", clock.now()), None)
    deps.fleet.start("zone-a", "gpu-1", "r")
    clock.advance(5)
    deps.store.patch_job("j1", {"heartbeat_at": clock.advance(55)})
    _run(deps, clock)
    job = deps.store.get_job("j1")
    assert job.state is JobState.TIMED_OUT and job.error.type == "timed_out"
    assert deps.publisher.messages[0][1]["status"] == "timed_out"
    assert deps.fleet.get("zone-a", "gpu-1").status == "TERMINATED"


def test_stockout_cools_the_vm_down(env):
    deps, clock = env
    job = make_job("j1", clock.now(), JobState.STARTING, operation="op-9")
    deps.store.create_job(job)
    deps.store.put_vm(lease_record("gpu-1", "j1", clock.now()), None)
    deps.fleet.operation_errors["op-9"] = "ZONE_RESOURCE_POOL_EXHAUSTED"
    deps.fleet.stockout_zones.add("zone-a")  # the retry finds no capacity either
    _run(deps, clock, 1)
    record, _ = deps.store.get_vm("gpu-1")
    assert record.cooldown_until is not None and record.cooldown_until > clock.now()
    stored = deps.store.get_job("j1")
    assert stored.state is JobState.QUEUED and stored.attempt == 2


def test_unpublished_results_are_published_again(env):
    deps, clock = env
    job = finish(make_job("j1", clock.now()), JobState.CANCELLED, clock.now())
    deps.store.create_job(job)
    summary = _run(deps, clock)
    assert summary["counts"] == {"Republish:applied": 1}
    assert deps.publisher.messages[0][0] == job.result.model_dump_json().encode()
    assert _run(deps, clock)["counts"] == {}


def test_deleted_job_is_skipped(env):
    deps, clock = env
    deps.store.create_job(make_job("j1", clock.now(), JobState.RUNNING))
    clock.advance(11)

    def gone(job_id, mutate):
        raise NotFound("deleted")

    deps.store.update_job = gone
    summary = run_reaper(deps, POLICY)
    assert summary["actions"][0]["outcome"] == "skipped"


def test_dispatch_grace_leaves_a_fresh_job_to_whoever_queued_it(env):
    deps, clock = env
    deps.store.create_job(make_job("j1", clock.now()))
    graced = ReaperPolicy(boot_timeout_s=10, heartbeat_timeout_s=10, max_attempts=2)
    clock.advance(5)
    assert run_reaper(deps, graced)["counts"] == {}
    assert not any(verb == "start" for verb, _ in deps.fleet.calls)
    clock.advance(5)
    assert run_reaper(deps, graced)["counts"] == {"DispatchJob:applied": 1}
    assert deps.store.get_job("j1").state is JobState.STARTING


# --- the safety net for lost or late done events ---------------------------------------------


def _finished_on_a_stopped_vm(deps, clock, *, attempt=1, flag_attempt=1, timeout_s=1800):
    """A running job whose worker wrote its done flag, drained and powered off, and whose done
    event has not arrived (yet): the VM is TERMINATED, the heartbeat stale, the lease gone."""
    job = make_job("j1", clock.now(), JobState.RUNNING, attempt=attempt, timeout_s=timeout_s)
    deps.store.create_job(job)
    clock.advance(5)
    done = manifest("j1", clock.now(), attempt=flag_attempt, outputs=[("a.png", b"png")])
    deps.blobs.write(
        "s", "jobs/j1/done.json", done.model_dump_json().encode(), if_generation_match=0
    )
    return done


def test_finished_job_whose_done_event_lags_is_completed_not_requeued(env):
    deps, clock = env
    _finished_on_a_stopped_vm(deps, clock)
    clock.advance(30)
    summary = run_reaper(deps, POLICY)
    assert summary["counts"] == {"CompleteFromDoneFlag:applied": 1}
    job = deps.store.get_job("j1")
    assert job.state is JobState.SUCCEEDED and job.attempt == 1
    assert [o.gs_uri for o in job.outputs] == ["gs://o/jobs/j1/outputs/a.png"]
    ((body, attributes),) = deps.publisher.messages
    assert attributes == {"job_id": "j1", "status": "succeeded"}
    assert ResultMessage.model_validate_json(body).outputs[0].signed_url.startswith("https://")
    assert not any(verb == "start" for verb, _ in deps.fleet.calls)  # nothing retried
    # The late event is then a duplicate; nothing is published twice.
    late = handle_done_flag(deps.completion(), StorageObject("s", "jobs/j1/done.json"))
    assert late["outcome"] == "duplicate" and len(deps.publisher.messages) == 1
    assert run_reaper(deps, POLICY)["counts"] == {}


def test_finished_job_past_its_deadline_is_completed_not_timed_out(env):
    deps, clock = env
    _finished_on_a_stopped_vm(deps, clock, timeout_s=60)
    clock.advance(120)
    assert run_reaper(deps, POLICY)["counts"] == {"CompleteFromDoneFlag:applied": 1}
    assert deps.store.get_job("j1").state is JobState.SUCCEEDED


def test_done_flag_of_an_older_attempt_does_not_complete(env):
    deps, clock = env
    _finished_on_a_stopped_vm(deps, clock, attempt=2, flag_attempt=1)
    clock.advance(30)
    summary = run_reaper(deps, POLICY)
    assert summary["counts"]["FailJob:applied"] == 1  # attempt 2 of 2 died: spent
    assert deps.store.get_job("j1").error.type == "attempts_exhausted"


def test_unreadable_done_flag_does_not_stop_the_reaper(env):
    deps, clock = env
    _finished_on_a_stopped_vm(deps, clock)
    clock.advance(30)

    def broken(bucket, name):
        raise RuntimeError("storage unavailable")

    deps.blobs.read = broken
    summary = run_reaper(deps, POLICY)
    assert summary["counts"]["RequeueJob:applied"] == 1  # ended as planned: nothing hangs


def test_each_applied_change_is_logged_with_its_reason(env, caplog):
    deps, clock = env
    deps.store.create_job(make_job("j1", clock.now(), max_attempts=3))
    _run(deps, clock)
    with caplog.at_level("INFO", logger="comfyburst.services.reap"):
        _run(deps, clock, 10)
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("reaper RequeueJob j1: worker did not claim the job within 10 s")
        for line in lines
    ), lines


def test_snapshot_reads_leased_jobs_but_not_drain_leases(env, monkeypatch):
    from comfyburst.services.reap import take_snapshot

    deps, clock = env
    done = make_job("j-done", clock.now(), JobState.SUCCEEDED)
    deps.store.create_job(done)
    deps.store.put_vm(lease_record("gpu-1", "j-done", clock.now()), None)
    deps.store.put_vm(lease_record("gpu-2", "drain:gpu-2", clock.now()), None)
    asked: list[str] = []
    real_get = deps.store.get_job
    monkeypatch.setattr(
        deps.store, "get_job", lambda job_id: asked.append(job_id) or real_get(job_id)
    )
    snapshot = take_snapshot(deps)
    assert asked == ["j-done"]
    assert "j-done" in {j.job_id for j in snapshot.jobs}
