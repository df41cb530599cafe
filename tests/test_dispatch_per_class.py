"""Dispatch per GPU class, the pure rule: a free VM of a class goes to a job of that class, so a
backlog on a full class never holds back a newer job of a class whose VM is free."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from comfyburst.domain import dispatch_rule
from comfyburst.domain.gpu_classes import CLASS_LABEL, GpuClass, build
from comfyburst.domain.reaper import DispatchJob, ReaperPolicy, plan
from comfyburst.ports import VmStatus
from comfyburst.states import JobState
from tests._completion_helpers import lease_record, make_job
from tests.fakes import FixedClock

T0 = FixedClock().now()
TEMPLATE = "global/instanceTemplates/gpu"
BIG = GpuClass(name="h100", zones=["zone-a"], templates={"zone": TEMPLATE}, max_vms=1)
SMALL = GpuClass(name="t4", zones=["zone-b"], templates={"zone": TEMPLATE}, max_vms=1)
CLASSES = build([BIG, SMALL], "h100", None)


@dataclass(frozen=True)
class Queued:
    job_id: str
    gpu_class: str | None
    caller: str | None = None  # one caller: fair share (domain/fair_share.py) is oldest first


def test_a_free_vm_goes_to_the_oldest_job_of_its_own_class() -> None:
    queued = [Queued("big-1", "h100"), Queued("big-2", "h100"), Queued("small-1", "t4")]
    picked = dispatch_rule.pick(queued, {"t4": 1}, {}, CLASSES)
    assert [j.job_id for j in picked] == ["small-1"]


def test_each_class_takes_as_many_jobs_as_it_has_free_vms_and_room_oldest_first() -> None:
    queued = [
        Queued("small-1", "t4"),
        Queued("big-1", "h100"),
        Queued("small-2", "t4"),
        Queued("big-2", None),  # no class recorded: the default class (h100)
        Queued("small-3", "t4"),
        Queued("big-3", "h100"),
    ]
    picked = dispatch_rule.pick(queued, {"h100": 1, "t4": 1}, {"h100": 1}, CLASSES)
    assert [j.job_id for j in picked] == ["small-1", "big-1", "big-2"]


def test_a_job_of_a_class_the_deployment_does_not_declare_takes_no_vm() -> None:
    picked = dispatch_rule.pick([Queued("gone-1", "a100")], {"h100": 1, "t4": 1}, {}, CLASSES)
    assert picked == []


def test_serves_matches_the_vm_label_to_the_jobs_class_and_defaults_both() -> None:
    assert dispatch_rule.serves(CLASSES, {CLASS_LABEL: "t4"}, "t4")
    assert not dispatch_rule.serves(CLASSES, {CLASS_LABEL: "t4"}, "h100")
    assert dispatch_rule.serves(CLASSES, {}, None)  # unlabelled VM, no class: the default
    assert dispatch_rule.serves(CLASSES, {}, "h100")
    assert not dispatch_rule.serves(CLASSES, {}, "t4")
    labels = [{CLASS_LABEL: "t4"}, {}, {CLASS_LABEL: "h100"}]
    assert dispatch_rule.free_by_class(CLASSES, labels) == {"t4": 1, "h100": 2}


def _vm(name: str, gpu_class: str, status: str, zone: str) -> VmStatus:
    return VmStatus(name=name, zone=zone, status=status, labels={CLASS_LABEL: gpu_class})


def _queued(job_id: str, gpu_class: str, seconds: float):
    job = make_job(job_id, T0 + timedelta(seconds=seconds), JobState.QUEUED, vm=None)
    return job.model_copy(update={"gpu_class": gpu_class})


def test_the_reaper_dispatches_the_newer_job_whose_class_has_a_free_vm() -> None:
    # h100: its one VM runs a job, three more wait (a backlog, the class at max_vms); t4: its
    # VM is stopped and free, its one job is the newest of all.
    running = make_job("big-0", T0, JobState.RUNNING, vm="h100-vm", zone="zone-a")
    running = running.model_copy(update={"gpu_class": "h100"})
    backlog = [_queued(f"big-{i}", "h100", i) for i in (1, 2, 3)]
    newest = _queued("small-1", "t4", 10)
    fleet = [
        _vm("h100-vm", "h100", "RUNNING", "zone-a"),
        _vm("t4-vm", "t4", "TERMINATED", "zone-b"),
    ]
    policy = ReaperPolicy(
        boot_timeout_s=600, heartbeat_timeout_s=600, max_attempts=3, dispatch_grace_s=0
    )
    records = [lease_record("h100-vm", "big-0", T0 + timedelta(seconds=20))]
    now = T0 + timedelta(seconds=30)
    with_classes = ReaperPolicy(**{**policy.__dict__, "classes": CLASSES})
    for each in (policy, with_classes):
        actions = plan([running, *backlog, newest], records, fleet, now, each)
        assert [a for a in actions if isinstance(a, DispatchJob)] == [DispatchJob("small-1")]
