"""The reaper planner's warm step (domain/_reaper_warm.py) with an injected `now`: inside a
window it starts stopped VMs up to the class's count (counting those already up), outside it
stops the idle warm-held VMs, and never one with a job, a job's lease or a plain drain."""

from __future__ import annotations

from datetime import UTC, datetime

from comfyburst.domain.gpu_classes import GpuClass, GpuClasses
from comfyburst.domain.reaper import (
    DRAIN_LEASE_PREFIX,
    DispatchJob,
    ReaperPolicy,
    plan,
    warm_lease_id,
)
from comfyburst.domain.reaper_actions import StartWarmVm, StopWarmVm
from comfyburst.domain.warm import WarmWindow
from comfyburst.ports import VmStatus
from comfyburst.states import JobState
from tests._completion_helpers import lease_record, make_job

# Monday 7 December 2026, 10:00 in Berlin (09:00 UTC): inside; 20:00 Berlin: outside.
INSIDE = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
OUTSIDE = datetime(2026, 12, 7, 19, 0, tzinfo=UTC)
WINDOW = WarmWindow.model_validate(
    {"days": "mon-fri", "from": "08:00", "to": "18:00", "time_zone": "Europe/Berlin", "vms": 2}
)


def _policy(*windows: WarmWindow) -> ReaperPolicy:
    l4 = GpuClass(name="l4", zones=["zone-a"], warm=list(windows))
    return ReaperPolicy(
        boot_timeout_s=600,
        heartbeat_timeout_s=120,
        max_attempts=3,
        dispatch_grace_s=0,
        classes=GpuClasses((l4,), "l4"),
    )


def _vm(name: str, status: str = "TERMINATED") -> VmStatus:
    return VmStatus(name=name, zone="zone-a", status=status)


def _warm(actions: list[object]) -> list[object]:
    return [a for a in actions if isinstance(a, StartWarmVm | StopWarmVm)]


def test_inside_the_window_stopped_vms_start_up_to_the_count() -> None:
    fleet = [_vm("gpu-1"), _vm("gpu-2"), _vm("gpu-3")]
    actions = _warm(plan([], [], fleet, INSIDE, _policy(WINDOW)))
    assert [(type(a).__name__, a.name) for a in actions] == [  # type: ignore[attr-defined]
        ("StartWarmVm", "gpu-1"),
        ("StartWarmVm", "gpu-2"),
    ]
    assert all(a.lease_until > INSIDE for a in actions)  # type: ignore[attr-defined]


def test_vms_already_up_count_busy_and_draining_alike() -> None:
    busy = make_job("j1", INSIDE, JobState.RUNNING, vm="gpu-1")
    records = [lease_record("gpu-1", "j1", INSIDE)]
    fleet = [_vm("gpu-1", "RUNNING"), _vm("gpu-2"), _vm("gpu-3")]
    actions = _warm(plan([busy], records, fleet, INSIDE, _policy(WINDOW)))
    assert [a.name for a in actions] == ["gpu-2"]  # type: ignore[attr-defined]
    draining = [lease_record("gpu-1", f"{DRAIN_LEASE_PREFIX}gpu-1", INSIDE, ttl_s=60)]
    booting = VmStatus(name="gpu-2", zone="zone-a", status="STAGING", last_start_at=INSIDE)
    two_up = [_vm("gpu-1", "RUNNING"), booting, _vm("gpu-3")]
    assert _warm(plan([], draining, two_up, INSIDE, _policy(WINDOW))) == []


def test_a_class_dispatching_queued_jobs_starts_no_warm_vm_this_period() -> None:
    queued = make_job("q1", INSIDE, JobState.QUEUED, vm=None)
    actions = plan([queued], [], [_vm("gpu-1"), _vm("gpu-2")], INSIDE, _policy(WINDOW))
    assert DispatchJob("q1") in actions
    assert _warm(actions) == []


def test_outside_the_window_idle_warm_vms_stop_and_nothing_else() -> None:
    job = make_job("j1", OUTSIDE, JobState.RUNNING, vm="gpu-3")
    records = [
        lease_record("gpu-1", warm_lease_id("gpu-1"), OUTSIDE, ttl_s=60),
        lease_record("gpu-2", f"{DRAIN_LEASE_PREFIX}gpu-2", OUTSIDE, ttl_s=60),
        lease_record("gpu-3", "j1", OUTSIDE),
    ]
    fleet = [_vm("gpu-1", "RUNNING"), _vm("gpu-2", "RUNNING"), _vm("gpu-3", "RUNNING")]
    actions = plan([job], records, fleet, OUTSIDE, _policy(WINDOW))
    assert _warm(actions) == [
        StopWarmVm(
            "gpu-1", "zone-a", warm_lease_id("gpu-1"), "warm: class l4 is outside its warm windows"
        )
    ]
    # Nothing at all for the plain drain and the busy VM.
    assert not [a for a in actions if getattr(a, "name", None) in ("gpu-2", "gpu-3")]


def test_inside_the_window_the_warm_vms_beyond_the_count_stop() -> None:
    records = [
        lease_record(f"gpu-{i}", warm_lease_id(f"gpu-{i}"), INSIDE, ttl_s=60) for i in (1, 2, 3)
    ]
    fleet = [_vm("gpu-1", "RUNNING"), _vm("gpu-2", "RUNNING"), _vm("gpu-3", "RUNNING")]
    actions = _warm(plan([], records, fleet, INSIDE, _policy(WINDOW)))
    assert [(type(a).__name__, a.name) for a in actions] == [("StopWarmVm", "gpu-3")]  # type: ignore[attr-defined]


def test_without_a_schedule_nothing_changes() -> None:
    fleet = [_vm("gpu-1"), _vm("gpu-2")]
    assert _warm(plan([], [], fleet, INSIDE, _policy())) == []
    drains = [lease_record("gpu-1", f"{DRAIN_LEASE_PREFIX}gpu-1", OUTSIDE, ttl_s=60)]
    running = [_vm("gpu-1", "RUNNING")]
    assert plan([], drains, running, OUTSIDE, _policy()) == []


def test_a_warm_vm_left_from_a_removed_schedule_stops() -> None:
    records = [lease_record("gpu-1", warm_lease_id("gpu-1"), INSIDE, ttl_s=60)]
    actions = _warm(plan([], records, [_vm("gpu-1", "RUNNING")], INSIDE, _policy()))
    assert [a.name for a in actions] == ["gpu-1"]  # type: ignore[attr-defined]
