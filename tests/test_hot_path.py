"""The short hot path on fakes: the lease and the job in one commit, the request stored before
it, the start after it; faults between the steps leave no lease without its job."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from comfyburst.domain import reaper
from comfyburst.domain.reaper import START_TAKES_S, ReaperPolicy
from comfyburst.errors import CapacityError, PreconditionFailed
from comfyburst.ports import VmStatus
from comfyburst.schema import Lease, VmRecord, VmRef
from comfyburst.services.submit import submit_job
from comfyburst.states import JobState
from comfyburst_worker.claims import BootLease, boot_lease
from tests._api_support import body, fake_env
from tests.fakes import FixedClock, InMemoryJobStore

MARKERS = ("drain:", "delete:")


def _check_invariant(store: InMemoryJobStore) -> None:
    """Every lease names a stored job; every starting job's VM is leased to it."""
    for name, (record, _) in store.vms.items():
        lease = record.lease
        if lease is not None and not lease.job_id.startswith(MARKERS):
            assert lease.job_id in store.jobs, f"lease of {name} names a missing job"
    for job in store.jobs.values():
        if job.state is JobState.STARTING:
            assert job.vm is not None
            record, _ = store.vms[job.vm.name]
            assert record.lease is not None and record.lease.job_id == job.job_id


def _watched(env: Any) -> list[str]:
    """Log every write in order, checking the invariant after each."""
    log: list[str] = []
    store, blobs, fleet = env.store, env.blobs, env.fleet
    originals = {
        "commit": store.commit,
        "put_vm": store.put_vm,
        "update_job": store.update_job,
        "create_job": store.create_job,
    }

    def wrap(name: str, call: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            result = call(*args, **kwargs)
            log.append(name)
            _check_invariant(store)
            return result

        return run

    for name, call in originals.items():
        setattr(store, name, wrap(name, call))
    write, start = blobs.write, fleet.start

    def blob_write(bucket: str, name: str, *args: Any, **kwargs: Any) -> int:
        generation = write(bucket, name, *args, **kwargs)
        log.append(f"gcs:{name.rsplit('/', 1)[-1]}")
        return generation

    def start_vm(zone: str, name: str, request_id: str) -> str:
        log.append(f"start:{name}")
        return start(zone, name, request_id)

    blobs.write, fleet.start = blob_write, start_vm
    return log


def test_reuse_path_is_one_read_one_commit_one_start() -> None:
    env = fake_env(vms=[("gpu-a1", "zone-a")])
    config = env.settings.deployment_config().model_dump_json()
    vm = env.fleet.vms["gpu-a1"]
    env.fleet.vms["gpu-a1"] = VmStatus(vm.name, vm.zone, vm.status, {"comfyburst-config": config})
    log = _watched(env)
    response = env.submit(body())
    assert response.status_code == 202 and response.get_json()["state"] == "starting"
    # The request first, then ONE commit (lease + job + key), then the start; no metadata.
    assert log == ["gcs:request.json", "commit", "start:gpu-a1"]
    assert [c for c in env.fleet.calls if c[0] == "set_metadata"] == []


def test_a_stockout_gives_the_lease_and_the_job_back_in_one_commit() -> None:
    env = fake_env(vms=[("gpu-a1", "zone-a"), ("gpu-b1", "zone-b")])
    log = _watched(env)
    start, asked = env.fleet.start, []

    def refuse_first(zone: str, name: str, request_id: str) -> str:
        asked.append(name)
        if len(asked) == 1:
            raise CapacityError("stockout", reason="ZONE_RESOURCE_POOL_EXHAUSTED")
        return start(zone, name, request_id)

    env.fleet.start = refuse_first
    job = env.submit(body()).get_json()
    assert job["state"] == "starting"
    stored = env.store.get_job(job["job_id"])
    first, second = asked
    assert stored.vm.name == second and first != second
    # lease+job, release+job back to queued, lease+job on the next VM: one commit each.
    assert [e for e in log if e in ("commit", "put_vm", "update_job")] == ["commit"] * 3
    refused, _ = env.store.get_vm(first)
    assert refused.lease is None and refused.cooldown_until is not None


def test_all_vms_refused_leaves_the_job_queued_and_no_lease() -> None:
    env = fake_env(vms=[("gpu-a1", "zone-a")])
    env.fleet.stockout_zones.add("zone-a")
    _watched(env)
    job = env.submit(body()).get_json()
    assert job["state"] == "queued" and job["queued_reason"] == "all zones out of capacity"
    assert env.store.get_vm("gpu-a1")[0].lease is None


class _Died(BaseException):
    """The process ends here (a crash, an instance recycled): nothing after runs."""


def test_a_crash_between_the_commit_and_the_start_leaves_the_job_with_its_lease() -> None:
    env = fake_env(vms=[("gpu-a1", "zone-a")])

    def die(zone: str, name: str, request_id: str) -> str:
        raise _Died

    env.fleet.start = die
    with pytest.raises(_Died):
        env.deps.submit_deps().dispatcher.place_new(_new_job(env))
    (job,) = env.store.jobs.values()
    assert job.state is JobState.STARTING and job.vm.name == "gpu-a1"
    _check_invariant(env.store)  # never a lease without its job
    # The window left: a job `starting` on a VM that never started. The reaper requeues it.
    policy = ReaperPolicy(boot_timeout_s=900, heartbeat_timeout_s=120, max_attempts=3)
    records = [r for r, _ in env.store.vms.values()]
    fleet = list(env.fleet.vms.values())
    soon = reaper.plan([job], records, fleet, env.clock.now() + timedelta(seconds=5), policy)
    assert soon == []
    later = env.clock.now() + timedelta(seconds=START_TAKES_S + 1)
    kinds = [type(a).__name__ for a in reaper.plan([job], records, fleet, later, policy)]
    assert "RequeueJob" in kinds and "CooldownVm" in kinds


def _new_job(env: Any) -> Any:
    from comfyburst.domain.jobs import new_job
    from comfyburst.schema import JobRequest
    from tests._api_support import WORKFLOW

    return new_job(
        job_id="crash-1",
        request=JobRequest.model_validate({"workflow": WORKFLOW}),
        workflow_bytes=10,
        now=env.clock.now(),
        max_attempts=3,
        ttl_days=1,
    )


def test_a_failed_request_write_leaves_nothing_leased_or_started() -> None:
    env = fake_env(vms=[("gpu-a1", "zone-a")])

    def broken(*args: Any, **kwargs: Any) -> int:
        raise OSError("storage is down")

    env.blobs.write = broken
    with pytest.raises(OSError):
        submit_job(
            env.deps.submit_deps(), json.dumps(body()).encode(), idempotency_key=None, caller=None
        )
    assert env.store.jobs == {} and env.store.get_vm("gpu-a1") == (None, None)
    assert [c for c in env.fleet.calls if c[0] == "start"] == []


def test_a_lost_lease_race_writes_no_job_and_takes_the_next_vm() -> None:
    env = fake_env(vms=[("gpu-a1", "zone-a"), ("gpu-b1", "zone-b")])
    commit = env.store.commit
    raced: list[str] = []

    def racing(vms: Any, job: Any = None) -> Any:
        if not raced:  # another dispatcher leases this VM between our read and our commit
            name = vms[0].record.name
            raced.append(name)
            later = env.clock.now() + timedelta(minutes=5)
            lease = Lease(job_id="other-job", expires_at=later)
            env.store.vms[name] = (VmRecord(name=name, zone=vms[0].record.zone, lease=lease), -1)
            env.store.jobs.clear()
        return commit(vms, job)

    env.store.commit = racing
    job = env.submit(body()).get_json()
    assert job["state"] == "starting"
    stored = env.store.get_job(job["job_id"])
    assert stored.vm.name != raced[0]
    assert env.store.get_vm(raced[0])[0].lease.job_id == "other-job"
    assert [name for call, name in env.fleet.calls if call == "start"] == [stored.vm.name]


def test_a_retried_submit_answers_its_job_and_starts_nothing_more() -> None:
    env = fake_env()
    first = env.submit(body(), **{"Idempotency-Key": "k1"})
    starts = [c for c in env.fleet.calls if c[0] == "start"]
    again = env.submit(body(), **{"Idempotency-Key": "k1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert [c for c in env.fleet.calls if c[0] == "start"] == starts
    assert len([r for r, _ in env.store.vms.values() if r.lease]) == 1
    other = dict(body(), options={"timeout_s": 60})
    conflict = env.submit(other, **{"Idempotency-Key": "k1"})
    assert conflict.status_code == 409
    assert conflict.get_json()["error"]["code"] == "idempotency_conflict"
    assert len(env.store.jobs) == 1


# --- the worker's side: its boot job from its VM's lease -------------------------------------


def _store_with_lease(job_id: str | None, expires_in_s: float) -> tuple[Any, Any, Any]:
    store, clock = InMemoryJobStore(), FixedClock()
    lease = (
        Lease(job_id=job_id, expires_at=clock.now() + timedelta(seconds=expires_in_s))
        if job_id
        else None
    )
    store.put_vm(VmRecord(name="gpu-a1", zone="zone-a", lease=lease), None)
    return store, clock, VmRef(name="gpu-a1", zone="zone-a")


@pytest.mark.parametrize(
    ("job_id", "expires_in_s", "expected", "drain_marker"),
    [
        ("job-1", 60, "job-1", False),
        ("job-1", -1, None, False),  # expired: not this boot's
        ("drain:gpu-a1", 60, None, True),  # the reaper's warm start (or this VM's own drain)
        ("drain:gpu-a1", -1, None, False),
        ("drain:warm:gpu-a1", 60, None, False),
        ("drain:stop:gpu-a1", 60, None, False),
        ("drain:gpu-b2", 60, None, False),  # another VM's marker is not this boot's
        ("delete:gpu-a1", 60, None, False),
        (None, 0, None, False),
    ],
)
def test_the_worker_takes_its_boot_job_from_its_lease(
    job_id: str | None, expires_in_s: float, expected: str | None, drain_marker: bool
) -> None:
    store, clock, vm = _store_with_lease(job_id, expires_in_s)
    assert boot_lease(store, vm, clock.now()) == BootLease(expected, drain_marker)


def test_no_lease_document_or_an_unreadable_one_means_drain() -> None:
    store, clock = InMemoryJobStore(), FixedClock()
    vm = VmRef(name="gpu-x", zone="zone-a")
    assert boot_lease(store, vm, clock.now()).job_id is None

    def broken(name: str) -> Any:
        raise PreconditionFailed("store down")

    store.get_vm = broken
    assert boot_lease(store, vm, clock.now()).job_id is None
    assert boot_lease(store, vm, clock.now()) == BootLease()  # not taken for a warm start
