"""Phases and receipts: the pure rules, the completion that fixes them in the job and its result
message (with Compute's RUNNING and the class's price), and the worker that records its part."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from comfyburst.adapters.clock import SystemClock
from comfyburst.api.views import JobView
from comfyburst.domain.receipts import merge_phases, receipt_of, shown_receipt
from comfyburst.schema import DoneManifest, JobPhases, ResultMessage, VmRef, WorkerTimings
from comfyburst.services.complete import StorageObject, handle_done_flag
from comfyburst.states import JobState
from comfyburst_worker.agent import Agent
from comfyburst_worker.phases import ComfyReadyProbe, PhaseLog, guest_booted_at
from tests._completion_helpers import fake_completion_deps, lease_record, make_job, manifest
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_request,
    put_job,
)
from tests.fakes import FakeFleet, FixedClock, InMemoryBlobStore, InMemoryJobStore

T0 = FixedClock().now()
SIGNALS, OUTPUTS = "signals-b", "outputs-b"


def _at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def _boot_phases() -> JobPhases:
    return JobPhases(
        guest_booted_at=_at(14),
        agent_up_at=_at(30),
        claimed_at=_at(32),
        models_ready_at=_at(40),
        comfyui_ready_at=_at(45),
        first_step_at=_at(46),
        done_at=_at(62),
    )


# --- pure rules -------------------------------------------------------------------------


def test_a_boot_receipt_counts_from_running_and_prices_the_vm_seconds():
    job = make_job("j1", T0, JobState.RUNNING)  # dispatched at T0
    phases = merge_phases(job, _boot_phases(), running_at=_at(10))
    assert phases.requested_at == T0 and phases.running_at == _at(10)
    receipt = receipt_of(phases, "l4", price_per_hour=0.72)
    assert (receipt.boot_s, receipt.idle_s, receipt.run_s) == (22.0, 0.0, 30.0)
    assert receipt.billed_s == 52.0
    assert receipt.cost_usd == pytest.approx(52 * 0.72 / 3600, abs=1e-6)


def test_without_running_the_boot_counts_from_the_guest_kernel():
    job = make_job("j1", T0, JobState.RUNNING)
    receipt = receipt_of(merge_phases(job, _boot_phases(), None), "l4", 1.0)
    assert receipt.boot_s == 18.0  # guest boot (14) to claim (32)


def test_a_running_older_than_the_request_is_an_earlier_boot_and_left_out():
    job = make_job("j1", T0, JobState.RUNNING)
    phases = merge_phases(job, _boot_phases(), running_at=T0 - timedelta(hours=1))
    assert phases.running_at is None


def test_a_drained_job_shows_its_idle_wait_and_no_boot():
    job = make_job("j2", T0, JobState.RUNNING)
    worker = JobPhases(idle_since_at=_at(100), claimed_at=_at(104), done_at=_at(120))
    phases = merge_phases(job, worker, running_at=_at(10))
    assert phases.requested_at is None and phases.running_at is None  # the boot was not its
    receipt = receipt_of(phases, "default", 3.6)
    assert (receipt.boot_s, receipt.idle_s, receipt.run_s, receipt.billed_s) == (0, 4, 16, 20)
    assert receipt.cost_usd == 0.02


def test_a_claim_by_a_warm_vm_bills_the_drain_before_the_hold_not_the_hold():
    job = make_job("j3", T0, JobState.RUNNING)
    # Its previous job ended at 100, the drain grace ran out at 105 and the VM held the warm
    # lease until this claim, at 4,000: the 5 s drain are this job's idle, the rest is not.
    worker = JobPhases(
        idle_since_at=_at(100), warm_since_at=_at(105), claimed_at=_at(4000), done_at=_at(4010)
    )
    receipt = receipt_of(merge_phases(job, worker, running_at=_at(10)), "l4", 3.6)
    assert (receipt.boot_s, receipt.idle_s, receipt.run_s, receipt.billed_s) == (0, 5, 10, 15)
    # A VM that booted for the schedule and took this as its first job: no idle, no boot.
    first = JobPhases(warm_since_at=_at(14), claimed_at=_at(4000), done_at=_at(4010))
    receipt = receipt_of(merge_phases(job, first, running_at=_at(10)), "l4", 3.6)
    assert (receipt.boot_s, receipt.idle_s, receipt.billed_s) == (0, 0, 10)


def test_the_phase_log_keeps_warm_stretches_off_the_jobs_and_hands_them_over():
    clock = FixedClock(T0)
    booted = T0 - timedelta(seconds=20)
    log = PhaseLog(clock, T0, booted)
    log.booted_without_job()  # the reaper started it for the warm schedule
    clock.advance(600)
    log.hold_warm(clock.now())  # its drain grace ended in the window: the stretch began at T0
    assert log.warm_so_far() == (T0, _at(600)) and log.warm_so_far() == (T0, _at(600))
    first = log.claimed(drained=True)
    assert first.guest_booted_at is None and first.agent_up_at is None  # not this job's boot
    assert first.warm_since_at == T0 and first.idle_since_at is None
    assert log.end_warm() == (T0, T0 + timedelta(seconds=600))
    assert log.warm_so_far() is None
    clock.advance(10)
    log.done(first)
    assert log.idle_after_s() == 0.0
    # Its drain (5 s), then warm (300 s) until the next claim.
    clock.advance(5)
    log.hold_warm(clock.now())
    clock.advance(300)
    log.hold_warm(clock.now())  # a later grace of the same stretch: it began at the first
    assert log.idle_after_s() == 5.0  # idle after the job ends where the stretch began
    second = log.claimed(drained=True)
    assert second.idle_since_at == first.done_at and second.warm_since_at == _at(615)
    assert log.end_warm() == (_at(615), _at(915)) and log.end_warm() is None
    receipt = receipt_of(second.model_copy(update={"done_at": _at(920)}), "l4", 3.6)
    assert receipt.idle_s == 5.0 and receipt.run_s == 5.0
    # Without a warm hold, a drained claim is as before: idle since the last run.
    clock.advance(5)
    log.done(second)
    clock.advance(2)
    third = log.claimed(drained=True)
    assert third.warm_since_at is None and third.idle_since_at == _at(920)


def test_a_boot_whose_job_was_not_claimable_held_warm_starts_its_stretch_at_the_agent():
    clock = FixedClock(T0)
    log = PhaseLog(clock, T0, T0 - timedelta(seconds=20))
    clock.advance(65)  # its boot job was gone; it drained its grace, then was held warm
    log.hold_warm(clock.now())
    assert log.warm_so_far() == (T0, _at(65))  # the time since the agent's start: no job's
    clock.advance(100)
    first = log.claimed(drained=True)
    assert first.guest_booted_at is None and first.warm_since_at == T0


def test_the_idle_after_the_last_job_shows_on_the_job_only():
    job = make_job("j1", T0, JobState.SUCCEEDED)
    receipt = receipt_of(merge_phases(job, _boot_phases(), _at(10)), "l4", 3.6)
    stored = job.model_copy(update={"receipt": receipt, "idle_after_s": 30.0})
    shown = shown_receipt(stored)
    assert shown is not None and shown.idle_after_s == 30.0 and shown.idle_after_cost_usd == 0.03
    view = JobView.of(stored)
    assert view.receipt == shown and view.phases is None


def test_guest_boot_time_is_now_minus_uptime_or_the_given_epoch():
    now = SystemClock().now()
    booted = guest_booted_at(now)
    assert booted is not None and booted < now  # this machine's /proc/uptime
    assert guest_booted_at(now, override_epoch_s=T0.timestamp()) == T0


# --- the completion fixes them ----------------------------------------------------------


class _Fleet(FakeFleet):
    def __init__(self, last_start: Any, fail: bool = False) -> None:
        super().__init__([("gpu-1", "zone-a")])
        self.vms["gpu-1"] = replace(self.vms["gpu-1"], status="RUNNING", last_start_at=last_start)
        self.fail, self.reads = fail, 0

    def get(self, zone: str, name: str) -> Any:
        self.reads += 1
        if self.fail:
            raise RuntimeError("compute unavailable")
        return super().get(zone, name)


def _complete(fleet: Any, phases: JobPhases | None, reads: Any = None) -> tuple[Any, ResultMessage]:
    deps, clock = fake_completion_deps(SIGNALS, OUTPUTS)
    deps = replace(deps, fleet=fleet, price_of=lambda job: ("l4", 0.72), reads=reads)
    deps.store.create_job(make_job("j1", T0, JobState.RUNNING))
    deps.store.put_vm(lease_record("gpu-1", "j1", T0), None)
    body = manifest("j1", clock.now(), outputs=[("a.png", b"png")])
    body = body.model_copy(update={"phases": phases})
    name = "jobs/j1/done.json"
    deps.blobs.write(SIGNALS, name, body.model_dump_json().encode(), "application/json")
    assert handle_done_flag(deps, StorageObject(SIGNALS, name))["outcome"] == "completed"
    (data, _attrs) = deps.publisher.messages[-1]
    return deps.store.get_job("j1"), ResultMessage.model_validate_json(data)


@pytest.mark.parametrize("side_by_side", [False, True])
def test_completion_adds_running_and_prices_the_receipt_in_job_and_result(side_by_side):
    from concurrent.futures import ThreadPoolExecutor

    fleet = _Fleet(_at(10))
    with ThreadPoolExecutor(2) as pool:
        job, message = _complete(fleet, _boot_phases(), pool if side_by_side else None)
    assert fleet.reads == 1
    assert job.phases.running_at == _at(10) and job.phases.requested_at == T0
    assert job.receipt.gpu_class == "l4" and job.receipt.billed_s == 52.0
    assert message.phases == job.phases and message.receipt == job.receipt
    assert json.loads(JobView.of(job).model_dump_json())["receipt"]["cost_usd"] == 0.0104


def test_the_environment_phase_and_timings_reach_the_job_its_view_and_its_result():
    """Issue #24: the worker's environment readying rides through completion like the other
    phases; its seconds are in the run, so the receipt is the one without it."""
    deps, clock = fake_completion_deps(SIGNALS, OUTPUTS)
    deps = replace(deps, fleet=_Fleet(_at(10)), price_of=lambda job: ("l4", 0.72))
    deps.store.create_job(make_job("j1", T0, JobState.RUNNING))
    deps.store.put_vm(lease_record("gpu-1", "j1", T0), None)
    phases = _boot_phases().model_copy(update={"environment_ready_at": _at(38)})
    timings = WorkerTimings(total_s=30.0, environment_s=6.0, environment_downloaded=True)
    body = manifest("j1", clock.now(), outputs=[("a.png", b"png")])
    body = body.model_copy(update={"phases": phases, "timings": timings})
    name = "jobs/j1/done.json"
    deps.blobs.write(SIGNALS, name, body.model_dump_json().encode(), "application/json")
    assert handle_done_flag(deps, StorageObject(SIGNALS, name))["outcome"] == "completed"
    job = deps.store.get_job("j1")
    message = ResultMessage.model_validate_json(deps.publisher.messages[-1][0])
    assert job.phases.environment_ready_at == _at(38) == message.phases.environment_ready_at
    assert job.receipt.billed_s == 52.0 and message.receipt == job.receipt
    view = json.loads(JobView.of(job).model_dump_json())
    assert view["worker_timings"]["environment_s"] == 6.0
    assert view["worker_timings"]["environment_downloaded"] is True
    assert view["phases"]["environment_ready_at"] is not None
    # A job without an environment: no environment phase, no environment timings.
    plain, plain_message = _complete(_Fleet(_at(10)), _boot_phases())
    assert plain.phases.environment_ready_at is None and plain_message.receipt == job.receipt
    assert plain.worker_timings.environment_s is None
    assert plain.worker_timings.environment_downloaded is None


def test_an_unreadable_running_leaves_it_out_and_the_job_still_ends():
    job, message = _complete(_Fleet(_at(10), fail=True), _boot_phases())
    assert job.state is JobState.SUCCEEDED and job.phases.running_at is None
    assert message.receipt is not None and message.receipt.boot_s == 18.0


def test_a_drained_job_reads_no_running_and_a_worker_without_phases_gets_no_receipt():
    fleet = _Fleet(_at(10))
    drained = JobPhases(idle_since_at=_at(1), claimed_at=_at(2), done_at=_at(5))
    job, _ = _complete(fleet, drained)
    assert fleet.reads == 0 and job.receipt.boot_s == 0 and job.receipt.idle_s == 1
    job, message = _complete(fleet, None)
    assert job.receipt is None and message.receipt is None and message.phases is None


# --- the worker records its part ----------------------------------------------------------


def test_the_worker_records_boot_steps_for_its_first_job_and_idle_for_a_drained_one(
    tmp_path, standin
):
    from comfyburst_worker.__main__ import build_services

    store = InMemoryJobStore()
    vm = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
    config = local_config(drain_grace_s=2.0)
    queued: list[str] = []

    class _Signals(InMemoryBlobStore):
        """Queues a second job when the first one's done flag lands (the VM then drains)."""

        def write(self, bucket: str, name: str, data: bytes, *args: Any, **kw: Any) -> int:
            generation = super().write(bucket, name, data, *args, **kw)
            if name.endswith("/done.json") and not queued:
                request = make_request(invert_workflow("cb/second"))
                queued.append(put_job(store, self, config, request).job_id)
            return generation

    blobs = _Signals()
    first = put_job(store, blobs, config, make_request(invert_workflow()), vm)
    clock = SystemClock()
    settings = local_settings(standin, tmp_path / "m")
    services = build_services(settings, config, vm, store, blobs, clock)
    # The agent is up before it starts the probe (as in __main__), so the probe's answer is
    # never earlier than the agent's start.
    agent_up_at = clock.now()
    probe = ComfyReadyProbe(standin, clock, 10).start()
    booted = agent_up_at - timedelta(seconds=20)
    log = PhaseLog(clock, agent_up_at, booted, probe)
    Agent(services, vm, phases=log).run(first.job_id)

    one = DoneManifest.model_validate_json(blobs.read("signals", f"jobs/{first.job_id}/done.json"))
    p = one.phases
    assert p is not None and p.guest_booted_at == booted and p.idle_since_at is None
    steps = [p.agent_up_at, p.claimed_at, p.models_ready_at, p.first_step_at, p.done_at]
    assert all(steps) and steps == sorted(steps)
    assert p.comfyui_ready_at is not None and p.agent_up_at <= p.comfyui_ready_at <= p.done_at
    raw = blobs.read("signals", f"jobs/{queued[0]}/done.json")
    two = DoneManifest.model_validate_json(raw)
    q = two.phases
    assert q is not None and q.guest_booted_at is None and q.agent_up_at is None
    assert q.comfyui_ready_at is None and q.idle_since_at == p.done_at
    assert q.idle_since_at <= q.claimed_at <= q.first_step_at <= q.done_at
    # The idle after the last job, until power-off, went on that job's document.
    last = store.get_job(queued[0])
    assert last is not None and last.idle_after_s is not None and last.idle_after_s >= 1.5
    assert store.get_job(first.job_id).idle_after_s is None


def test_a_first_job_that_ends_before_the_probe_answers_still_gets_comfyui_s_ready_time(
    tmp_path, standin
):
    """Issue #23: on a loaded VM the runner's own wait can see ComfyUI answer while the probe
    sleeps between polls, and a quick job ends before it polls again. The probe here never
    polls during the run (it is not started): the order is forced, not timed."""
    from comfyburst_worker.__main__ import build_services

    store, blobs, clock = InMemoryJobStore(), InMemoryBlobStore(), SystemClock()
    vm = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
    config, settings = local_config(), local_settings(standin, tmp_path / "m")
    job = put_job(store, blobs, config, make_request(invert_workflow()), vm)
    services = build_services(settings, config, vm, store, blobs, clock)
    probe = ComfyReadyProbe(standin, clock, settings.comfyui_ready_timeout_s)
    log = PhaseLog(clock, clock.now(), None, probe)
    Agent(services, vm, phases=log).run(job.job_id)

    done = DoneManifest.model_validate_json(blobs.read("signals", f"jobs/{job.job_id}/done.json"))
    p = done.phases
    assert done.status.value == "succeeded" and p is not None and probe.ready_at is None
    assert p.comfyui_ready_at is not None, "the runner saw ComfyUI answer: the boot's ready time"
    assert p.agent_up_at <= p.comfyui_ready_at <= p.first_step_at <= p.done_at
    # Both answered: the earlier one is the boot's ready time, whichever poller it came from.
    later = p.comfyui_ready_at + timedelta(seconds=5)
    probe.ready_at = later
    again = PhaseLog(clock, clock.now(), None, probe)
    assert again.done(again.claimed(drained=False), p.comfyui_ready_at).comfyui_ready_at == (
        p.comfyui_ready_at
    )
    assert again.done(JobPhases(agent_up_at=T0), None).comfyui_ready_at == later


def test_the_price_is_the_class_s_and_the_derived_class_takes_the_pool_price():
    from comfyburst.domain.gpu_classes import GpuClass, build
    from comfyburst.domain.receipts import class_price

    derived = build([], None, None, pool_zones=["us-central1-a"])
    assert class_price(derived, None, 0.85) == ("default", 0.85)
    l4 = GpuClass(
        name="l4",
        zones=["us-central1-a"],
        templates={"us-central1": "t"},
        price_per_hour=0.71,
    )
    declared = build([l4], "l4", None)
    assert class_price(declared, None, 9.0) == ("l4", 0.71)
    with pytest.raises(ValueError, match="unknown GPU class"):
        class_price(declared, "h100", 9.0)


def test_a_price_that_cannot_be_found_leaves_the_receipt_unpriced_and_the_job_ends():
    deps, clock = fake_completion_deps(SIGNALS, OUTPUTS)

    def no_price(job: Any) -> tuple[str, float]:
        raise ValueError("unknown GPU class 'gone'")

    deps = replace(deps, fleet=_Fleet(_at(10)), price_of=no_price)
    deps.store.create_job(make_job("j1", T0, JobState.RUNNING))
    body = manifest("j1", clock.now()).model_copy(update={"phases": _boot_phases()})
    deps.blobs.write(SIGNALS, "jobs/j1/done.json", body.model_dump_json().encode())
    assert handle_done_flag(deps, StorageObject(SIGNALS, "jobs/j1/done.json"))["outcome"] == (
        "completed"
    )
    job = deps.store.get_job("j1")
    assert job.state is JobState.SUCCEEDED
    assert job.receipt.price_per_hour == 0 and job.receipt.cost_usd == 0
    assert job.receipt.billed_s == 52.0


def test_a_comfyui_that_never_answers_leaves_its_ready_time_out():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    probe = ComfyReadyProbe(f"http://127.0.0.1:{port}", SystemClock(), timeout_s=0.3).start()
    probe._thread.join(timeout=10)
    assert not probe._thread.is_alive() and probe.ready_at is None
    log = PhaseLog(SystemClock(), SystemClock().now(), None, probe)
    phases = log.done(log.claimed(drained=False))
    assert phases.agent_up_at is not None and phases.comfyui_ready_at is None
    assert PhaseLog(SystemClock(), T0).idle_after_s() is None  # nothing ran: no idle to record


def test_the_reaper_completes_late_flags_with_the_same_running_read_and_price():
    from comfyburst.services.reap import ReaperDeps
    from tests.fakes import FakeSigner, InMemoryPublisher

    fleet = _Fleet(_at(10))
    price_of = lambda job: ("l4", 0.72)  # noqa: E731
    deps = ReaperDeps(
        InMemoryJobStore(),
        fleet,
        InMemoryPublisher(),
        FixedClock(),
        blobs=InMemoryBlobStore(),
        signer=FakeSigner(),
        signals_bucket=SIGNALS,
        outputs_bucket=OUTPUTS,
        price_of=price_of,
    )
    completion = deps.completion()
    assert completion is not None and completion.fleet is fleet
    assert completion.price_of is price_of
