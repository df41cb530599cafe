"""Lifecycle edges of the reaper's pure planner: a VM another job or a drain holds is never
stopped, and VMs hung on their way up are. Pure domain code, `now` as a parameter."""

from __future__ import annotations

from datetime import timedelta

from comfyburst.domain.reaper import ReaperPolicy, ReleaseLease, RequeueJob, StopVm, plan
from comfyburst.ports import VmStatus
from comfyburst.schema import Lease, VmRecord
from comfyburst.services._placement import request_id
from comfyburst.states import JobState
from tests._completion_helpers import lease_record, make_job
from tests.fakes import FixedClock

POLICY = ReaperPolicy(boot_timeout_s=600, heartbeat_timeout_s=120, max_attempts=3)
T0 = FixedClock().now()


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


def vm(name: str, status: str = "RUNNING", last_start_s: float | None = None) -> VmStatus:
    started = at(last_start_s) if last_start_s is not None else None
    return VmStatus(name=name, zone="zone-a", status=status, last_start_at=started)


def stops(actions) -> list[StopVm]:
    return [a for a in actions if isinstance(a, StopVm)]


def test_vm_of_a_timed_out_job_is_kept_while_a_drain_lease_holds_it():
    # j1's heartbeat is stale, but the worker re-pointed its VM's lease to a drain: j1 is
    # retried elsewhere and the draining worker keeps its VM.
    job = make_job("j1", T0, JobState.RUNNING)
    drain = VmRecord(
        name="gpu-1", zone="zone-a", lease=Lease(job_id="drain:gpu-1", expires_at=at(200))
    )
    actions = plan([job], [drain], [vm("gpu-1")], at(130), POLICY)
    assert [type(a) for a in actions] == [RequeueJob]
    assert stops(actions) == []


def test_vm_of_an_ended_job_is_kept_while_another_live_job_runs_on_it():
    # j1 never got its claim recorded (boot timeout), but the VM's worker runs j2 now.
    j1 = make_job("j1", T0, JobState.STARTING)
    j2 = make_job("j2", at(100), JobState.RUNNING).model_copy(update={"heartbeat_at": at(590)})
    actions = plan([j1, j2], [lease_record("gpu-1", "j2", at(100))], [vm("gpu-1")], at(600), POLICY)
    assert RequeueJob("j1", JobState.STARTING, 1, "worker did not claim the job within 600 s") in (
        actions
    )
    assert stops(actions) == []
    assert not any(isinstance(a, ReleaseLease) for a in actions)  # j2's lease stays


def test_vm_of_an_ended_job_is_kept_while_a_live_lease_of_another_job_holds_it():
    # j1 passed its deadline; the VM was leased a moment ago for j2 (being dispatched).
    j1 = make_job("j1", T0, JobState.STARTING, timeout_s=60)
    j2 = make_job("j2", at(50))
    actions = plan([j1, j2], [lease_record("gpu-1", "j2", at(55))], [vm("gpu-1")], at(61), POLICY)
    assert stops(actions) == []


def test_vm_of_an_ended_job_is_stopped_when_nobody_else_holds_it():
    j1 = make_job("j1", T0, JobState.STARTING, timeout_s=60)
    actions = plan([j1], [lease_record("gpu-1", "j1", T0)], [vm("gpu-1")], at(61), POLICY)
    assert [s.name for s in stops(actions)] == ["gpu-1"]


def test_vm_hung_in_staging_is_stopped_after_the_boot_timeout():
    fleet = [vm("gpu-1", "STAGING", last_start_s=0)]
    assert plan([], [], fleet, at(599), POLICY) == []
    assert plan([], [], fleet, at(600), POLICY) == [
        StopVm("gpu-1", "zone-a", "STAGING for 600 s (boot timeout 600 s)")
    ]


def test_vm_hung_in_provisioning_counts_from_its_latest_lease():
    # Compute's lastStartTimestamp is older than the lease (a stale value): the later one counts.
    done = make_job("j1", T0, JobState.FAILED)
    record = lease_record("gpu-1", "j1", at(300), ttl_s=900)
    fleet = [vm("gpu-1", "PROVISIONING", last_start_s=0)]
    assert stops(plan([done], [record], fleet, at(899), POLICY)) == []
    assert [s.name for s in stops(plan([done], [record], fleet, at(900), POLICY))] == ["gpu-1"]


def test_booting_vm_without_lease_or_known_start_is_stopped():
    assert [s.name for s in stops(plan([], [], [vm("gpu-1", "STAGING")], at(1), POLICY))] == [
        "gpu-1"
    ]


def test_booting_vm_of_a_live_job_is_left_to_its_boot_timeout():
    job = make_job("j1", T0, JobState.STARTING)
    fleet = [vm("gpu-1", "STAGING", last_start_s=-5000)]  # a start long ago: the job decides
    assert plan([job], [lease_record("gpu-1", "j1", T0)], fleet, at(599), POLICY) == []


def test_booting_vm_under_a_live_drain_lease_is_left_alone():
    drain = VmRecord(
        name="gpu-1", zone="zone-a", lease=Lease(job_id="drain:gpu-1", expires_at=at(5000))
    )
    assert plan([], [drain], [vm("gpu-1", "STAGING", last_start_s=0)], at(4000), POLICY) == []


def test_start_request_id_changes_with_each_new_lease():
    first = Lease(job_id="j1", expires_at=at(900))
    again = Lease(job_id="j1", expires_at=at(905))
    assert request_id("j1", 1, "gpu-1", "start", first) == request_id(
        "j1", 1, "gpu-1", "start", first
    )
    assert request_id("j1", 1, "gpu-1", "start", first) != request_id(
        "j1", 1, "gpu-1", "start", again
    )
