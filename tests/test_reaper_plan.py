"""The reaper's pure planner: one test per policy, `now` as a parameter, no sleeps."""

from __future__ import annotations

from datetime import timedelta

from comfyburst.domain.reaper import (
    CancelJob,
    CompleteFromDoneFlag,
    CooldownVm,
    DispatchJob,
    FailJob,
    ReaperPolicy,
    ReleaseLease,
    RequeueJob,
    StopVm,
    TimeOutJob,
    done_flag_candidates,
    plan,
)
from comfyburst.ports import VmStatus
from comfyburst.states import JobState
from tests._completion_helpers import lease_record, make_job
from tests.fakes import FixedClock

POLICY = ReaperPolicy(
    boot_timeout_s=600,
    heartbeat_timeout_s=120,
    max_attempts=3,
    stockout_cooldown_s=300,
    drain_grace_s=30,
)
T0 = FixedClock().now()


def vm(name: str, status: str = "RUNNING", zone: str = "zone-a") -> VmStatus:
    return VmStatus(name=name, zone=zone, status=status)


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def test_nothing_to_do_for_a_healthy_running_job():
    job = make_job("j1", T0, JobState.RUNNING)
    assert plan([job], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(60), POLICY) == []


def test_running_vm_without_lease_is_stopped():
    actions = plan([], [lease_record("gpu-1", None, T0)], [vm("gpu-1"), vm("gpu-2")], at(1), POLICY)
    assert actions == [
        StopVm("gpu-1", "zone-a", "running without a lease"),
        StopVm("gpu-2", "zone-a", "running without a lease"),
    ]


def test_terminated_vms_are_left_alone():
    assert plan([], [], [vm("gpu-1", "TERMINATED"), vm("gpu-2", "STOPPING")], at(1), POLICY) == []


def test_running_vm_whose_leased_job_is_terminal_is_stopped_and_released():
    done = make_job("j1", T0, JobState.SUCCEEDED)
    actions = plan([done], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(1), POLICY)
    assert actions == [
        ReleaseLease("gpu-1", "j1", "leased job is succeeded"),
        StopVm("gpu-1", "zone-a", "leased job j1 is succeeded"),
    ]


def test_lease_to_a_missing_job_is_released_even_on_a_stopped_vm():
    actions = plan(
        [], [lease_record("gpu-1", "gone", T0)], [vm("gpu-1", "TERMINATED")], at(60), POLICY
    )
    assert actions == [ReleaseLease("gpu-1", "gone", "leased job is missing")]


def test_fresh_lease_for_a_job_being_submitted_is_left_alone():
    # The snapshot reads jobs before leases: a job committed with its lease between the two
    # reads is missing from it, so within the dispatch grace such a lease is not a stray.
    records, fleet = [lease_record("gpu-1", "new", T0)], [vm("gpu-1")]
    assert plan([], records, fleet, at(5), POLICY) == []
    assert plan([], records, fleet, at(11), POLICY) == [
        ReleaseLease("gpu-1", "new", "leased job is missing"),
        StopVm("gpu-1", "zone-a", "leased job new is missing"),
    ]


def test_draining_worker_gets_its_grace():
    record = lease_record("gpu-1", None, T0).model_copy(update={"last_seen": T0})
    assert plan([], [record], [vm("gpu-1")], at(29), POLICY) == []
    assert kinds(plan([], [record], [vm("gpu-1")], at(31), POLICY)) == ["StopVm"]


def test_vm_leased_to_a_job_being_dispatched_is_kept():
    queued = make_job("j1", T0)
    assert plan([queued], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(1), POLICY) == []


def test_vm_with_expired_lease_is_stopped():
    queued = make_job("j1", T0)
    record = lease_record("gpu-1", "j1", T0, ttl_s=10)
    actions = plan([queued], [record], [vm("gpu-1")], at(11), POLICY)
    assert StopVm("gpu-1", "zone-a", "lease for j1 expired") in actions


def test_vm_named_by_a_live_job_is_kept_even_without_lease():
    # The draining worker claimed j2 (queued -> running) but the lease still names j1.
    j1 = make_job("j1", T0, JobState.SUCCEEDED)
    j2 = make_job("j2", T0, JobState.RUNNING)
    actions = plan([j1, j2], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(5), POLICY)
    assert not any(isinstance(a, StopVm) for a in actions)


def test_boot_timeout_requeues_and_frees_the_vm():
    job = make_job("j1", T0, JobState.STARTING)
    record = lease_record("gpu-1", "j1", T0)
    assert plan([job], [record], [vm("gpu-1")], at(599), POLICY) == []
    actions = plan([job], [record], [vm("gpu-1")], at(600), POLICY)
    reason = "worker did not claim the job within 600 s"
    assert actions == [
        RequeueJob("j1", JobState.STARTING, 1, reason),
        StopVm("gpu-1", "zone-a", f"job j1: {reason}", after_job="j1"),
        ReleaseLease("gpu-1", "j1", reason, after_job="j1"),
    ]


def test_stale_heartbeat_requeues():
    job = make_job("j1", T0, JobState.RUNNING)
    record = lease_record("gpu-1", "j1", T0)
    assert plan([job], [record], [vm("gpu-1")], at(119), POLICY) == []
    actions = plan([job], [record], [vm("gpu-1")], at(120), POLICY)
    assert kinds(actions) == ["RequeueJob", "StopVm", "ReleaseLease"]
    assert actions[0].reason == "no heartbeat for 120 s"


def test_fresh_heartbeat_counts_from_heartbeat_at():
    job = make_job("j1", T0, JobState.RUNNING).model_copy(update={"heartbeat_at": at(100)})
    assert plan([job], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(200), POLICY) == []


def test_attempts_spent_fails_the_job():
    job = make_job("j1", T0, JobState.RUNNING, attempt=3)
    actions = plan([job], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(500), POLICY)
    assert isinstance(actions[0], FailJob)
    assert actions[0].error_type == "attempts_exhausted"
    assert "all 3 attempts spent" in actions[0].message
    assert kinds(actions[1:]) == ["StopVm", "ReleaseLease"]


def test_policy_max_attempts_caps_the_jobs_own():
    job = make_job("j1", T0, JobState.RUNNING, attempt=2, max_attempts=5)
    tight = ReaperPolicy(boot_timeout_s=1, heartbeat_timeout_s=1, max_attempts=2)
    assert isinstance(plan([job], [], [vm("gpu-1")], at(5), tight)[0], FailJob)


def test_running_job_whose_vm_died_is_requeued_at_once():
    job = make_job("j1", T0, JobState.RUNNING)
    actions = plan(
        [job], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1", "TERMINATED")], at(1), POLICY
    )
    assert actions[0] == RequeueJob("j1", JobState.RUNNING, 1, "VM gpu-1 is TERMINATED")
    assert kinds(actions[1:]) == ["ReleaseLease", "DispatchJob"]  # nothing to stop; retry now


def test_requeued_job_is_not_dispatched_without_a_free_vm():
    job = make_job("j1", T0, JobState.RUNNING)
    actions = plan([job], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(500), POLICY)
    assert kinds(actions) == ["RequeueJob", "StopVm", "ReleaseLease"]


def test_stockout_start_error_cools_the_vm_down_and_requeues():
    job = make_job("j1", T0, JobState.STARTING, operation="op-1")
    actions = plan(
        [job],
        [lease_record("gpu-1", "j1", T0)],
        [vm("gpu-1", "TERMINATED")],
        at(5),
        POLICY,
        start_errors={"j1": "ZONE_RESOURCE_POOL_EXHAUSTED"},
    )
    assert actions[0] == RequeueJob(
        "j1", JobState.STARTING, 1, "start of VM gpu-1 failed: ZONE_RESOURCE_POOL_EXHAUSTED"
    )
    assert CooldownVm("gpu-1", "zone-a", at(305), "start failed: ZONE_RESOURCE_POOL_EXHAUSTED") in (
        actions
    )
    assert not any(isinstance(a, DispatchJob) for a in actions)  # its only VM cools down


def test_other_start_error_requeues_without_cooldown():
    job = make_job("j1", T0, JobState.STARTING, operation="op-1")
    actions = plan(
        [job],
        [],
        [vm("gpu-1", "TERMINATED")],
        at(5),
        POLICY,
        start_errors={"j1": "RESOURCE_NOT_READY"},
    )
    assert kinds(actions) == ["RequeueJob", "DispatchJob"]


def test_deadline_times_out_live_and_queued_jobs():
    running = make_job("j1", T0, JobState.RUNNING, timeout_s=60)
    queued = make_job("j2", T0, timeout_s=60)
    actions = plan(
        [running, queued], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(60), POLICY
    )
    assert [(type(a).__name__, getattr(a, "job_id", None)) for a in actions] == [
        ("TimeOutJob", "j1"),
        ("TimeOutJob", "j2"),
        ("StopVm", None),
        ("ReleaseLease", "j1"),
    ]
    assert isinstance(actions[0], TimeOutJob) and "deadline" in actions[0].message


def test_cancel_requested_with_vm_gone_cancels():
    job = make_job("j1", T0, JobState.RUNNING).model_copy(update={"cancel_requested": True})
    fresh = [vm("gpu-1", "TERMINATED")]
    actions = plan([job], [lease_record("gpu-1", "j1", T0)], fresh, at(1), POLICY)
    assert actions[0] == CancelJob("j1", JobState.RUNNING, 1, "cancelled; VM gone")
    # While the VM runs, the worker handles the cancel itself.
    assert plan([job], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(1), POLICY) == []


def test_cancel_requested_with_dead_worker_is_cancelled_not_requeued():
    job = make_job("j1", T0, JobState.RUNNING).model_copy(update={"cancel_requested": True})
    actions = plan([job], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(500), POLICY)
    assert isinstance(actions[0], CancelJob) and kinds(actions[1:]) == ["StopVm", "ReleaseLease"]


def test_queued_jobs_dispatch_onto_free_vms_oldest_first():
    jobs = [make_job(f"j{i}", at(i)) for i in range(3)]
    fleet = [vm("gpu-1", "TERMINATED"), vm("gpu-2", "TERMINATED"), vm("gpu-3")]
    actions = plan(jobs, [lease_record("gpu-3", None, T0)], fleet, at(20), POLICY)
    assert [a for a in actions if isinstance(a, DispatchJob)] == [
        DispatchJob("j0"),
        DispatchJob("j1"),
    ]


def test_no_dispatch_onto_leased_or_cooling_vms():
    job = make_job("j9", T0)
    cooling = lease_record("gpu-1", None, T0).model_copy(update={"cooldown_until": at(100)})
    leased = lease_record("gpu-2", "j8", T0)
    live = make_job("j8", T0)
    fleet = [vm("gpu-1", "TERMINATED"), vm("gpu-2", "TERMINATED")]
    actions = plan([job, live], [cooling, leased], fleet, at(10), POLICY)
    assert actions == []  # gpu-1 cools down, gpu-2 is leased to j8 being dispatched
    actions = plan([job], [cooling, leased], fleet, at(10), POLICY)
    assert actions == [ReleaseLease("gpu-2", "j8", "leased job is missing"), DispatchJob("j9")]


def test_cancel_requested_queued_job_is_cancelled_not_dispatched():
    job = make_job("j1", T0).model_copy(update={"cancel_requested": True})
    actions = plan([job], [], [vm("gpu-1", "TERMINATED")], at(1), POLICY)
    assert actions == [CancelJob("j1", JobState.QUEUED, 1, "cancel requested while queued")]


# --- dispatch grace: a freshly queued job is left to whoever queued it ----------------------


def test_freshly_queued_job_waits_out_the_dispatch_grace():
    job = make_job("j1", T0)
    free = [vm("gpu-1", "TERMINATED")]
    assert plan([job], [], free, at(9.9), POLICY) == []
    assert plan([job], [], free, at(10), POLICY) == [DispatchJob("j1")]


def test_grace_counts_from_entering_queued_not_from_creation():
    # Requeued at 100 s by someone else (a previous reaper period, a draining worker's hand-back).
    job = make_job("j1", T0).model_copy(update={"attempt": 2, "state_changed_at": at(100)})
    free = [vm("gpu-1", "TERMINATED")]
    assert plan([job], [], free, at(105), POLICY) == []
    assert plan([job], [], free, at(110), POLICY) == [DispatchJob("j1")]


def test_job_requeued_in_this_period_is_dispatched_without_grace():
    job = make_job("j1", T0, JobState.RUNNING)
    fleet = [vm("gpu-1", "TERMINATED"), vm("gpu-2", "TERMINATED")]
    actions = plan([job], [lease_record("gpu-1", "j1", T0)], fleet, at(1), POLICY)
    assert kinds(actions) == ["RequeueJob", "ReleaseLease", "DispatchJob"]


# --- done flags: a finished attempt is completed, never retried -----------------------------


def test_candidates_are_live_jobs_about_to_be_ended():
    running = make_job("j1", T0, JobState.RUNNING, timeout_s=60)
    starting = make_job("j2", T0, JobState.STARTING)
    queued = make_job("j3", T0, timeout_s=60)
    fleet = [vm("gpu-1", "TERMINATED")]
    actions = plan([running, starting, queued], [], fleet, at(600), POLICY)
    assert sorted(done_flag_candidates(actions)) == ["j1", "j2"]  # a queued job has no flag


def test_flag_of_the_current_attempt_completes_instead_of_requeueing():
    job = make_job("j1", T0, JobState.RUNNING, attempt=2)
    record = lease_record("gpu-1", "j1", T0)
    fleet = [vm("gpu-1", "TERMINATED"), vm("gpu-2", "TERMINATED")]
    actions = plan([job], [record], fleet, at(1), POLICY, done_flags={"j1": 2})
    assert actions == [
        CompleteFromDoneFlag(
            "j1", JobState.RUNNING, 2, "done flag present; was: VM gpu-1 is TERMINATED"
        )
    ]  # no release (the completion does it), no retry


def test_flag_of_an_older_attempt_changes_nothing():
    job = make_job("j1", T0, JobState.RUNNING, attempt=2)
    record = lease_record("gpu-1", "j1", T0)
    fleet = [vm("gpu-1", "TERMINATED")]
    assert plan([job], [record], fleet, at(1), POLICY, done_flags={"j1": 1}) == plan(
        [job], [record], fleet, at(1), POLICY
    )


def test_flag_completes_a_job_past_its_deadline_and_keeps_its_vm():
    job = make_job("j1", T0, JobState.RUNNING, timeout_s=60)
    record = lease_record("gpu-1", "j1", T0)
    actions = plan([job], [record], [vm("gpu-1")], at(60), POLICY, done_flags={"j1": 1})
    assert kinds(actions) == ["CompleteFromDoneFlag"]  # the draining worker keeps its VM
