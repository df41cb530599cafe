"""GPU classes on the worker side: a draining VM claims only jobs of its class, and a job that
Spot keeps preempting moves to the fallback class at the cap (the rules on an in-memory store;
the preemption watch on a Spot VM of the Compute stand-in)."""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from comfyburst.domain.jobs import FREE_PREEMPTIONS, requeue_preempted
from comfyburst.schema import Job, VmRef
from comfyburst.states import JobState
from comfyburst_worker.claims import LeaseKeeper, VmClass, queued_claim, rank_queued
from tests._completion_helpers import make_job
from tests.fakes import FixedClock, InMemoryJobStore
from tests.test_worker_preemption import spot_vm  # noqa: F401  (the stand-in's Spot VM)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPOT = VmClass("l4-spot", default="l4-spot")
STANDARD = VmClass("l4", default="l4-spot")
VM = VmRef(name="gpu-a", zone="us-central1-a")


def _queued(job_id: str, gpu_class: str | None, minutes: int = 0) -> Job:
    job = make_job(job_id, NOW + timedelta(minutes=minutes), vm=None)
    return job.model_copy(update={"gpu_class": gpu_class})


def test_a_job_runs_only_on_its_class_and_unnamed_is_the_default() -> None:
    assert SPOT.takes(_queued("a", "l4-spot")) and SPOT.takes(_queued("b", None))
    assert not SPOT.takes(_queued("c", "l4"))
    assert STANDARD.takes(_queued("c", "l4")) and not STANDARD.takes(_queued("b", None))


def test_rank_queued_leaves_out_other_classes() -> None:
    jobs = [_queued("old-std", "l4", 0), _queued("spot", "l4-spot", 1), _queued("dflt", None, 2)]
    # (the oldest few come in an order of each VM's own: compare as sets)
    assert {j.job_id for j in rank_queued(jobs, set(), "vm", vm_class=SPOT)} == {"spot", "dflt"}
    assert [j.job_id for j in rank_queued(jobs, set(), "vm", vm_class=STANDARD)] == ["old-std"]
    assert len(rank_queued(jobs, set(), "vm")) == 3  # no class given: every job


def test_a_claim_refuses_a_job_of_another_class_on_the_job_as_read() -> None:
    store, clock = InMemoryJobStore(), FixedClock(NOW)
    store.create_job(_queued("std", "l4"))
    keeper = LeaseKeeper(store, VM, clock, 60)
    assert keeper.take("std", None, queued_claim(VM, clock, SPOT)) is None
    stored = store.get_job("std")
    assert stored is not None and stored.state is JobState.QUEUED
    assert store.get_vm(VM.name)[0] is None  # refused: nothing written, no lease either
    claimed = keeper.take("std", None, queued_claim(VM, clock, STANDARD))
    assert claimed is not None and claimed.state is JobState.RUNNING
    record, _ = store.get_vm(VM.name)
    assert record is not None and record.lease is not None and record.lease.job_id == "std"


def _running(preemptions: int, gpu_class: str | None = "l4-spot") -> Job:
    job = make_job("j", NOW, JobState.RUNNING, attempt=preemptions + 1)
    return job.model_copy(update={"preemptions": preemptions, "gpu_class": gpu_class})


def test_preemptions_below_the_cap_keep_the_class() -> None:
    requeued = requeue_preempted(_running(FREE_PREEMPTIONS - 2), NOW, "l4")
    assert requeued.gpu_class == "l4-spot" and requeued.gpu_class_reason is None
    assert requeued.state is JobState.QUEUED


def test_the_preemption_reaching_the_cap_moves_the_job_to_the_fallback() -> None:
    requeued = requeue_preempted(_running(FREE_PREEMPTIONS - 1), NOW, "l4")
    assert requeued.state is JobState.QUEUED
    assert requeued.preemptions == FREE_PREEMPTIONS
    assert requeued.gpu_class == "l4"
    assert requeued.gpu_class_reason == requeued.queued_reason
    assert "moved to l4" in (requeued.gpu_class_reason or "")


def test_without_a_fallback_the_job_keeps_its_class_past_the_cap() -> None:
    requeued = requeue_preempted(_running(FREE_PREEMPTIONS + 1), NOW)
    assert requeued.gpu_class == "l4-spot" and requeued.queued_reason == "preempted"


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def request(self, reason: None, lost: bool = False) -> None:
        self.requested = True


def test_the_watch_moves_a_job_preempted_up_to_the_cap_to_the_fallback(spot_vm: Any) -> None:
    from comfyburst.adapters.clock import SystemClock
    from comfyburst_worker.preemption import PreemptionWatch
    from tests.test_worker_preemption import VM as SPOT_VM
    from tests.test_worker_preemption import ZONE

    store = InMemoryJobStore()
    running = make_job("spotted", NOW, JobState.RUNNING, vm=SPOT_VM.name, zone=ZONE)
    job = running.model_copy(
        update={"gpu_class": "l4-spot", "preemptions": FREE_PREEMPTIONS - 1, "attempt": 3}
    )
    store.create_job(job)
    host = spot_vm.instance(SPOT_VM.name)["metadata_host"]
    watch = PreemptionWatch(host, store, SystemClock(), SPOT_VM.name, fallback_class="l4")
    stop = _Stop()
    watch.bind(job, stop)
    watch.start()
    assert spot_vm.preempt(ZONE, SPOT_VM.name)
    assert watch.handled.wait(15) and stop.requested
    stored = store.get_job("spotted")
    assert stored is not None and stored.state is JobState.QUEUED
    assert (stored.preemptions, stored.gpu_class) == (FREE_PREEMPTIONS, "l4")
    assert "moved to l4" in (stored.gpu_class_reason or "")
    watch.close()


def test_a_draining_vm_finds_its_class_behind_a_full_page_of_other_classes(tmp_path) -> None:
    """The drain poll's first page (the oldest live jobs) holds only another class's jobs: the
    VM looks in its own class's queue and claims its job instead of powering off."""
    from comfyburst_worker.agent import Agent
    from tests._worker_support import build_services, local_config, local_settings

    store, clock = InMemoryJobStore(), FixedClock(NOW)
    for i in range(60):  # more than the poll's first page, all of the Spot class
        store.create_job(_queued(f"spot-{i:02d}", "l4-spot", minutes=i))
    store.create_job(_queued("std-late", "l4", minutes=90))
    config = local_config(default_gpu_class="l4-spot")
    settings = local_settings("http://127.0.0.1:9", tmp_path / "models")
    services = build_services(settings, config, VM, store, None, clock)  # type: ignore[arg-type]
    agent = Agent(services, VM, gpu_class="l4")

    claimed = agent._claim_next(None)

    assert claimed is not None and claimed.job_id == "std-late"
    assert claimed.state is JobState.RUNNING and claimed.vm.name == VM.name
    record, _ = store.get_vm(VM.name)
    assert record is not None and record.lease.job_id == "std-late"
    assert all(store.get_job(f"spot-{i:02d}").state is JobState.QUEUED for i in range(60))
