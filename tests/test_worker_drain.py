"""Draining without a lease gap: the agent holds `drain:{vm}` before its done flag, so the
completion trigger (which releases only the manifest's job's lease) and the reaper (which
stops a RUNNING VM with no live lease) leave a draining VM alone; the hold ends at power-off."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from comfyburst.adapters.clock import SystemClock
from comfyburst.domain.reaper import DRAIN_LEASE_PREFIX, ReaperPolicy, StopVm, plan
from comfyburst.ports import VmStatus
from comfyburst.schema import DoneManifest, DoneStatus, Lease, VmRecord, VmRef
from comfyburst.services.complete import CompletionDeps, StorageObject, handle_done_flag
from comfyburst.states import JobState
from comfyburst_worker.claims import SPREAD_WINDOW, rank_queued
from tests._completion_helpers import lease_record, make_job
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import (
    FakeSigner,
    FixedClock,
    InMemoryBlobStore,
    InMemoryJobStore,
    InMemoryPublisher,
)

VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
DRAIN = f"{DRAIN_LEASE_PREFIX}{VM.name}"
POLICY = ReaperPolicy(boot_timeout_s=600, heartbeat_timeout_s=120, max_attempts=3, drain_grace_s=0)
T0 = FixedClock().now()


class _SignalsHook(InMemoryBlobStore):
    """Calls `on_done(job_id)` right after a done flag is written, as Eventarc would."""

    def __init__(self) -> None:
        super().__init__()
        self.on_done: Any = None

    def write(self, bucket: str, name: str, data: bytes, *args: Any, **kw: Any) -> int:
        generation = super().write(bucket, name, data, *args, **kw)
        if bucket == "signals" and name.endswith("/done.json") and self.on_done:
            self.on_done(name.split("/")[1])
        return generation


def _reaper_stops(store: InMemoryJobStore) -> list[Any]:
    """What the reaper would do to this VM now (RUNNING, policy grace 0 so only the lease
    protects it)."""
    jobs = list(store.jobs.values())
    fleet = [VmStatus(name=VM.name, zone=VM.zone, status="RUNNING")]
    now = SystemClock().now()
    actions = plan(jobs, store.list_vms(), fleet, now, POLICY)
    return [a for a in actions if getattr(a, "vm_name", getattr(a, "name", None)) == VM.name]


def test_trigger_and_reaper_leave_a_draining_vm_alone(tmp_path, standin):
    store, blobs = InMemoryJobStore(), _SignalsHook()
    config = local_config(drain_grace_s=0.4)
    job = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    deps = CompletionDeps(
        store, blobs, FakeSigner(), InMemoryPublisher(), SystemClock(), "signals", "outputs"
    )
    seen: dict[str, Any] = {}

    def on_done(job_id: str) -> None:
        before, _ = store.get_vm(VM.name)
        seen["lease_at_flag"] = before.lease if before else None
        outcome = handle_done_flag(deps, StorageObject("signals", f"jobs/{job_id}/done.json"))
        seen["outcome"] = outcome
        after, _ = store.get_vm(VM.name)
        seen["lease_after_trigger"] = after.lease if after else None
        seen["reaper"] = _reaper_stops(store)

    blobs.on_done = on_done
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)

    assert seen["outcome"]["outcome"] == "completed" and seen["outcome"]["released"] is False
    assert store.get_job(job.job_id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    held = seen["lease_at_flag"]
    assert held is not None and held.job_id == DRAIN
    assert seen["lease_after_trigger"] == held
    margin = (held.expires_at - SystemClock().now()).total_seconds()
    assert 0 < margin <= 0.4 + 30
    assert seen["reaper"] == []
    record, _ = store.get_vm(VM.name)
    assert record is not None and record.lease is None  # released at power-off


def test_job_queued_while_draining_is_claimed_from_the_drain_lease(tmp_path, standin):
    store, blobs = InMemoryJobStore(), _SignalsHook()
    config = local_config(drain_grace_s=2.0)
    first = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    queued: list[str] = []

    def on_done(job_id: str) -> None:
        if job_id == first.job_id:
            request = make_request(invert_workflow("cb/second"))
            queued.append(put_job(store, blobs, config, request).job_id)

    blobs.on_done = on_done
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(first.job_id)

    one = DoneManifest.model_validate_json(blobs.read("signals", f"jobs/{first.job_id}/done.json"))
    raw = blobs.read("signals", f"jobs/{queued[0]}/done.json")
    assert raw is not None, "the job queued during the drain was not run"
    two = DoneManifest.model_validate_json(raw)
    assert one.next_job_id is None and two.status is DoneStatus.SUCCEEDED
    assert store.get_job(queued[0]).vm.name == VM.name  # type: ignore[union-attr]
    record, _ = store.get_vm(VM.name)
    assert record is not None and record.lease is None


def test_lease_held_by_another_job_is_not_taken_for_the_drain(tmp_path, standin):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config(drain_grace_s=0.1)
    now = SystemClock().now()
    other = Lease(job_id="someone-else", expires_at=now + timedelta(seconds=600))
    store.put_vm(VmRecord(name=VM.name, zone=VM.zone, lease=other), None)
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(None)
    record, _ = store.get_vm(VM.name)
    assert record is not None and record.lease == other


# --- the reaper planner's view of a drain lease ---------------------------------------------


def _drain_record(ttl_s: int) -> VmRecord:
    return lease_record("gpu-1", f"{DRAIN_LEASE_PREFIX}gpu-1", T0, ttl_s=ttl_s)


def test_reaper_keeps_a_vm_with_a_live_drain_lease():
    done = make_job("j1", T0, JobState.SUCCEEDED)
    fleet = [VmStatus(name="gpu-1", zone="zone-a", status="RUNNING")]
    assert plan([done], [_drain_record(60)], fleet, T0 + timedelta(seconds=59), POLICY) == []


def test_reaper_stops_and_releases_when_the_drain_lease_expired():
    fleet = [VmStatus(name="gpu-1", zone="zone-a", status="RUNNING")]
    actions = plan([], [_drain_record(60)], fleet, T0 + timedelta(seconds=61), POLICY)
    assert StopVm("gpu-1", "zone-a", "drain lease drain:gpu-1 expired") in actions
    assert any(type(a).__name__ == "ReleaseLease" for a in actions)


def test_live_drain_lease_is_not_free_for_dispatch():
    queued = make_job("q1", T0)
    fleet = [VmStatus(name="gpu-1", zone="zone-a", status="TERMINATED")]
    actions = plan([queued], [_drain_record(60)], fleet, T0 + timedelta(seconds=1), POLICY)
    assert actions == []


# --- claiming the next job under contention ----------------------------------------------


class _ClaimFailsOnce(InMemoryJobStore):
    """The first claim of `job_id` (the commit of the lease and the job) raises, as a store
    call that fails on the network does."""

    def __init__(self, job_id: str = "") -> None:
        super().__init__()
        self.job_id = job_id
        self.failed = 0

    def commit(self, vms: Any, job: Any = None) -> Any:
        if job is not None and job.job.job_id == self.job_id and not self.failed:
            self.failed += 1
            raise ConnectionError("the commit's connection reset")
        return super().commit(vms, job)


def test_a_failed_claim_of_the_next_job_does_not_lose_the_finished_one(tmp_path, standin):
    store, blobs = _ClaimFailsOnce(), InMemoryBlobStore()
    config = local_config(drain_grace_s=2.0)
    first = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    second = put_job(store, blobs, config, make_request(invert_workflow("cb/second")))
    store.job_id = second.job_id

    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(first.job_id)

    assert store.failed == 1
    one = DoneManifest.model_validate_json(blobs.read("signals", f"jobs/{first.job_id}/done.json"))
    assert one.status is DoneStatus.SUCCEEDED and one.next_job_id is None
    raw = blobs.read("signals", f"jobs/{second.job_id}/done.json")
    assert raw is not None, "the job whose first claim failed was not claimed while draining"
    assert DoneManifest.model_validate_json(raw).status is DoneStatus.SUCCEEDED
    record, _ = store.get_vm(VM.name)
    assert record is not None and record.lease is None


def _queued(job_id: str, seconds: int, models: tuple[str, ...] = ()) -> Any:
    job = make_job(job_id, T0 + timedelta(seconds=seconds))
    request = job.request.model_copy(update={"models": list(models)})
    return job.model_copy(update={"request": request})


def test_draining_vms_spread_over_the_oldest_queued_jobs():
    jobs = [_queued(f"job-{i:02d}", i) for i in range(20)]
    firsts = {rank_queued(jobs, set(), f"comfyburst-gpu-{v}")[0].job_id for v in range(8)}
    oldest = {j.job_id for j in jobs[:SPREAD_WINDOW]}
    assert firsts <= oldest and len(firsts) >= 4  # 8 VMs do not all race for one job
    ranked = rank_queued(jobs, set(), "comfyburst-gpu-0")
    assert {j.job_id for j in ranked[:SPREAD_WINDOW]} == oldest
    assert [j.job_id for j in ranked[SPREAD_WINDOW:]] == [j.job_id for j in jobs[SPREAD_WINDOW:]]


def test_jobs_with_cached_models_still_come_first():
    cached = _queued("late-cached", 100, ("checkpoints/a.safetensors",))
    jobs = [_queued(f"job-{i:02d}", i, ("checkpoints/b.safetensors",)) for i in range(10)]
    for v in range(8):
        ranked = rank_queued([*jobs, cached], {"checkpoints/a.safetensors"}, f"gpu-{v}")
        assert ranked[0].job_id == "late-cached"
