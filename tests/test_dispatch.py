"""Dispatch on the in-memory fakes: leases, zones, stockouts, races, metadata."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from comfyburst.domain.jobs import new_job
from comfyburst.errors import PreconditionFailed
from comfyburst.schema import Job, JobRequest, Lease, VmRecord
from comfyburst.services.dispatch import (
    METADATA_CONFIG_KEY,
    Dispatcher,
    request_id,
)
from comfyburst.states import JobState
from tests._api_support import WORKFLOW, make_settings
from tests.fakes import FakeFleet, FixedClock, InMemoryJobStore

SETTINGS = make_settings()


def make_jobs(
    store: InMemoryJobStore, clock: FixedClock, count: int, models: list | None = None
) -> list[Job]:
    request = JobRequest.model_validate({"workflow": WORKFLOW, "models": models or []})
    jobs = []
    for index in range(count):
        job = new_job(
            job_id=f"job-{index:02d}",
            request=request,
            workflow_bytes=100,
            now=clock.now(),
            max_attempts=3,
            ttl_days=1,
        )
        store.create_job(job)
        jobs.append(job)
    return jobs


def setup(vms: list[tuple[str, str]]) -> tuple[InMemoryJobStore, FakeFleet, FixedClock, Dispatcher]:
    store, fleet, clock = InMemoryJobStore(), FakeFleet(vms), FixedClock()
    return store, fleet, clock, Dispatcher(store, fleet, clock, SETTINGS)


def live_leases(store: InMemoryJobStore, clock: FixedClock) -> dict[str, str]:
    return {
        name: record.lease.job_id
        for name, (record, _) in store.vms.items()
        if record.lease is not None and record.is_leased(clock.now())
    }


def test_three_vms_five_jobs_three_start_two_wait() -> None:
    store, fleet, clock, dispatcher = setup([("a1", "zone-a"), ("a2", "zone-a"), ("b1", "zone-b")])
    jobs = make_jobs(store, clock, 5)
    outcomes = [dispatcher.dispatch(job) for job in jobs]
    started = [o for o in outcomes if o.started]
    assert len(started) == 3
    assert sorted(o.vm.name for o in started) == ["a1", "a2", "b1"]
    # The first two go to different zones: the second zone is idle when the second job comes.
    assert {outcomes[0].vm.zone, outcomes[1].vm.zone} == {"zone-a", "zone-b"}
    for outcome in started:
        stored = store.get_job(outcome.job.job_id)
        assert stored.state is JobState.STARTING
        assert stored.vm.name == outcome.vm.name and stored.dispatched_at == clock.now()
        vm = fleet.vms[outcome.vm.name]
        assert vm.status == "RUNNING"
        assert "comfyburst-job" not in vm.metadata  # the worker reads its lease instead
        assert vm.metadata[METADATA_CONFIG_KEY] == SETTINGS.deployment_config().model_dump_json()
        record, _ = store.get_vm(outcome.vm.name)
        assert record.lease.job_id == outcome.job.job_id
        assert record.lease.expires_at == clock.now() + timedelta(seconds=SETTINGS.lease_ttl_s)
    for outcome in outcomes[3:]:
        stored = store.get_job(outcome.job.job_id)
        assert stored.state is JobState.QUEUED and stored.queued_reason == "no free VM"


def test_start_uses_a_request_id_derived_from_job_and_attempt() -> None:
    store, _fleet, clock, dispatcher = setup([("a1", "zone-a")])
    (job,) = make_jobs(store, clock, 1)
    outcome = dispatcher.dispatch(job)
    lease = store.get_vm("a1")[0].lease
    expected = request_id(job.job_id, 1, "a1", "start", lease)
    assert outcome.vm.operation == f"op-start-a1-{expected}"
    assert expected == request_id(job.job_id, 1, "a1", "start", lease)
    assert expected != request_id(job.job_id, 2, "a1", "start", lease)


def test_stockout_in_one_zone_starts_in_the_next_and_cools_the_vm_down() -> None:
    store, fleet, clock, dispatcher = setup([("a1", "zone-a"), ("a2", "zone-a"), ("b1", "zone-b")])
    fleet.stockout_zones.add("zone-a")
    # a1 caches the job's model, so it is the first choice.
    model = {"kind": "checkpoints", "filename": "m.safetensors", "url": "https://civitai.com/m"}
    store.put_vm(
        VmRecord(name="a1", zone="zone-a", models_cached=["checkpoints/m.safetensors"]), None
    )
    (job,) = make_jobs(store, clock, 1, models=[model])
    outcome = dispatcher.dispatch(job)
    assert outcome.started and outcome.vm.name == "b1"
    # a1 refused; the next try went to the other zone, not to a2 in the stocked-out zone.
    assert outcome.tried == [("a1", "ZONE_RESOURCE_POOL_EXHAUSTED"), ("b1", "started")]
    record, _ = store.get_vm("a1")
    assert record.lease is None
    assert record.cooldown_until == clock.now() + timedelta(seconds=SETTINGS.stockout_cooldown_s)
    assert record.models_cached == ["checkpoints/m.safetensors"]  # kept across the release
    # While it cools down, a1 is not tried again even though its zone is back.
    fleet.stockout_zones.clear()
    assert dispatcher.dispatch(_another(store, clock, "job-x")).vm.name == "a2"
    clock.advance(SETTINGS.stockout_cooldown_s + 1)
    assert dispatcher.dispatch(_another(store, clock, "job-y")).vm.name == "a1"


def _another(store: InMemoryJobStore, clock: FixedClock, job_id: str) -> Job:
    request = JobRequest.model_validate({"workflow": WORKFLOW})
    job = new_job(
        job_id=job_id,
        request=request,
        workflow_bytes=1,
        now=clock.now(),
        max_attempts=3,
        ttl_days=1,
    )
    store.create_job(job)
    return job


def test_all_zones_out_of_capacity_leaves_the_job_queued_without_leases() -> None:
    store, fleet, clock, dispatcher = setup([("a1", "zone-a"), ("b1", "zone-b")])
    fleet.stockout_zones.update({"zone-a", "zone-b"})
    (job,) = make_jobs(store, clock, 1)
    outcome = dispatcher.dispatch(job)
    assert not outcome.started
    stored = store.get_job(job.job_id)
    assert stored.state is JobState.QUEUED
    assert stored.queued_reason == "all zones out of capacity"
    assert live_leases(store, clock) == {}
    assert all(vm.status == "TERMINATED" for vm in fleet.vms.values())


def test_busy_leased_and_cooling_vms_are_skipped() -> None:
    store, fleet, clock, dispatcher = setup(
        [("run", "zone-a"), ("leased", "zone-a"), ("cool", "zone-b"), ("expired", "zone-b")]
    )
    fleet.vms["run"] = replace(fleet.vms["run"], status="RUNNING")
    later = clock.now() + timedelta(minutes=5)
    store.put_vm(
        VmRecord(name="leased", zone="zone-a", lease=Lease(job_id="other", expires_at=later)), None
    )
    store.put_vm(VmRecord(name="cool", zone="zone-b", cooldown_until=later), None)
    earlier = clock.now() - timedelta(seconds=1)
    store.put_vm(
        VmRecord(name="expired", zone="zone-b", lease=Lease(job_id="old", expires_at=earlier)), None
    )
    first, second = make_jobs(store, clock, 2)
    assert dispatcher.dispatch(first).vm.name == "expired"
    outcome = dispatcher.dispatch(second)
    assert not outcome.started and outcome.tried == []
    # The only VM not busy is cooling down after a stockout.
    assert store.get_job(second.job_id).queued_reason == "all zones out of capacity"


def test_vms_caching_the_jobs_models_come_first() -> None:
    store, _fleet, clock, dispatcher = setup([(f"v{i}", "zone-a") for i in range(6)])
    store.put_vm(VmRecord(name="v4", zone="zone-a", models_cached=["loras/l.safetensors"]), None)
    model = {"kind": "loras", "filename": "l.safetensors", "url": "https://civitai.com/l"}
    (job,) = make_jobs(store, clock, 1, models=[model])
    assert dispatcher.dispatch(job).vm.name == "v4"


class _StaleOnce(FakeFleet):
    """A fleet whose metadata changes once between our read and our write."""

    def __init__(self, vms: list[tuple[str, str]]) -> None:
        super().__init__(vms)
        self.stale = 1

    def set_metadata(self, zone, name, items, fingerprint, request_id):  # type: ignore[no-untyped-def]
        if self.stale:
            self.stale -= 1
            self.calls.append(("set_metadata", name))
            raise PreconditionFailed("stale fingerprint")
        return super().set_metadata(zone, name, items, fingerprint, request_id)


def test_a_vm_whose_config_write_loses_its_fingerprint_is_passed_over() -> None:
    store, clock = InMemoryJobStore(), FixedClock()
    fleet = _StaleOnce([("a1", "zone-a"), ("b1", "zone-b")])
    (job,) = make_jobs(store, clock, 1)
    outcome = Dispatcher(store, fleet, clock, SETTINGS).dispatch(job)
    assert outcome.started
    (lost,) = [name for name, result in outcome.tried if result == "lost"]
    assert lost != outcome.vm.name and ("start", lost) not in fleet.calls
    assert store.get_vm(lost)[0] is None  # nothing was leased on it


def test_a_vm_holding_this_deployments_config_gets_no_metadata_write() -> None:
    store, fleet, clock, dispatcher = setup([("a1", "zone-a")])
    config = SETTINGS.deployment_config().model_dump_json()
    fleet.vms["a1"] = replace(fleet.vms["a1"], metadata={METADATA_CONFIG_KEY: config})
    (job,) = make_jobs(store, clock, 1)
    assert dispatcher.dispatch(job).started
    assert [c for c in fleet.calls if c[0] == "set_metadata"] == []
    # Another deployment's config (a redeploy with other settings) is replaced before start.
    other = SETTINGS.deployment_config().model_copy(update={"jobs_bucket": "elsewhere"})
    fleet.stop("zone-a", "a1", "r")
    store.put_vm(VmRecord(name="a1", zone="zone-a"), store.get_vm("a1")[1])
    fleet.vms["a1"] = replace(
        fleet.vms["a1"], metadata={METADATA_CONFIG_KEY: other.model_dump_json()}
    )
    assert dispatcher.dispatch(_another(store, clock, "job-2")).started
    assert fleet.vms["a1"].metadata[METADATA_CONFIG_KEY] == config


def test_a_job_cancelled_before_dispatch_gets_no_lease_and_no_start() -> None:
    store, fleet, clock, dispatcher = setup([("a1", "zone-a")])
    (job,) = make_jobs(store, clock, 1)
    store.update_job(job.job_id, lambda j: j.model_copy(update={"state": JobState.CANCELLED}))
    outcome = dispatcher.dispatch(job)  # the caller still holds the queued copy
    assert not outcome.started
    assert outcome.job.state is JobState.CANCELLED
    # Seen in the read before the commit: nothing leased, nothing started.
    assert not [c for c in fleet.calls if c[0] in ("start", "stop")]
    assert fleet.vms["a1"].status == "TERMINATED"
    assert store.get_vm("a1")[0] is None


class _BrokenStart(FakeFleet):
    def start(self, zone, name, request_id):  # type: ignore[no-untyped-def]
        raise RuntimeError("compute is down")


def test_an_unexpected_start_error_releases_the_lease_and_keeps_the_job_queued() -> None:
    store, clock = InMemoryJobStore(), FixedClock()
    (job,) = make_jobs(store, clock, 1)
    outcome = Dispatcher(
        store, _BrokenStart([("a1", "zone-a"), ("b1", "zone-b")]), clock, SETTINGS
    ).dispatch(job)
    assert not outcome.started
    assert len(outcome.tried) == 1  # stops at the first unexpected error
    assert store.get_job(job.job_id).queued_reason == "dispatch error; the reaper will retry"
    assert live_leases(store, clock) == {}


def test_dispatch_many_shares_one_view_of_the_fleet() -> None:
    store, _fleet, clock, dispatcher = setup([("a1", "zone-a"), ("b1", "zone-b")])
    jobs = make_jobs(store, clock, 3)
    outcomes = dispatcher.dispatch_many(jobs)
    assert [o.started for o in outcomes] == [True, True, False]
    assert outcomes[2].tried == []  # it saw both VMs taken without racing for them


class _RacingStore(InMemoryJobStore):
    """Holds every dispatcher after its first lease read until all have read: a real race."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)
        self.local = threading.local()

    def read_for_lease(self, vm_name: str, job_id: str):  # type: ignore[no-untyped-def]
        result = super().read_for_lease(vm_name, job_id)
        if not getattr(self.local, "waited", False):
            self.local.waited = True
            self.barrier.wait()
        return result


@pytest.mark.parametrize("vm_count", [3, 8])
def test_twenty_concurrent_dispatches_never_lease_a_vm_twice(vm_count: int) -> None:
    store, clock = _RacingStore(20), FixedClock()
    vms = [(f"v{i}", "zone-a" if i % 2 else "zone-b") for i in range(vm_count)]
    fleet = FakeFleet(vms)
    dispatcher = Dispatcher(store, fleet, clock, SETTINGS)
    jobs = make_jobs(store, clock, 20)
    outcomes: list = [None] * 20
    threads = [
        threading.Thread(target=lambda i=i: outcomes.__setitem__(i, dispatcher.dispatch(jobs[i])))
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    started = [o for o in outcomes if o.started]
    assert len(started) == vm_count
    names = [o.vm.name for o in started]
    assert len(set(names)) == len(names)
    starts = [name for call, name in fleet.calls if call == "start"]
    assert sorted(starts) == sorted(names)  # each VM started once, by its lease holder
    leases = live_leases(store, clock)
    assert leases == {o.vm.name: o.job.job_id for o in started}
    starting = [j for j in store.jobs.values() if j.state is JobState.STARTING]
    assert len(starting) == vm_count


def test_a_stale_cached_view_is_read_again_before_a_job_is_left_queued() -> None:
    store, fleet, clock = InMemoryJobStore(), FakeFleet([("a1", "zone-a")]), FixedClock()
    dispatcher = Dispatcher(store, fleet, clock, SETTINGS, view_max_age_s=3600)
    first, second = make_jobs(store, clock, 2)
    assert dispatcher.dispatch(first).started
    # Out of band (another API instance, the worker, the reaper): the VM is free again.
    fleet.stop("zone-a", "a1", "r")
    store.put_vm(VmRecord(name="a1", zone="zone-a"), store.get_vm("a1")[1])
    outcome = dispatcher.dispatch(second)
    assert outcome.started and outcome.vm.name == "a1"


def test_a_stale_cached_view_costs_a_try_but_never_a_double_lease() -> None:
    store, fleet, clock = (
        InMemoryJobStore(),
        FakeFleet([("a1", "zone-a"), ("b1", "zone-b")]),
        FixedClock(),
    )
    mine = Dispatcher(store, fleet, clock, SETTINGS, view_max_age_s=3600)
    other = Dispatcher(store, fleet, clock, SETTINGS, view_max_age_s=3600)
    jobs = make_jobs(store, clock, 3)
    mine.dispatch_many([])  # nothing to do
    assert mine.dispatch(jobs[0]).started  # mine's view now: one VM left
    assert other.dispatch(jobs[1]).started  # other takes the VM mine thinks is free
    outcome = mine.dispatch(jobs[2])
    assert not outcome.started
    assert store.get_job(jobs[2].job_id).queued_reason == "no free VM"
    assert len(live_leases(store, clock)) == 2


def test_the_capacity_reason_survives_a_second_look_at_the_pool() -> None:
    store, fleet, clock = (
        InMemoryJobStore(),
        FakeFleet([("a1", "zone-a"), ("a2", "zone-a")]),
        FixedClock(),
    )
    fleet.stockout_zones.add("zone-a")
    dispatcher = Dispatcher(store, fleet, clock, SETTINGS, view_max_age_s=3600)
    first, second = make_jobs(store, clock, 2)
    assert dispatcher.dispatch(first).reason == "all zones out of capacity"
    # Both VMs cool down now: still a capacity problem, not a busy pool.
    assert dispatcher.dispatch(second).reason == "all zones out of capacity"
