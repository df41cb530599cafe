"""Dispatch on a pool of templates: the Firestore emulator, our Compute stand-in (templates,
zone capacity, quota) and the real adapters. Reuse a stopped VM first, else create one where
Compute has capacity, following `zonesAvailable`; retried creates are the same create."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from comfyburst import wiring
from comfyburst.domain.jobs import new_job
from comfyburst.errors import JobExists
from comfyburst.schema import Job, JobRequest, VmRecord
from comfyburst.services.dispatch import Dispatcher
from comfyburst.states import JobState
from localcloud.compute import ComputeStandin, ComputeStandinConfig
from tests._api_support import WORKFLOW
from tests._poll import poll_until

pytestmark = pytest.mark.emulator

US_A, US_B, EU_A = "us-central1-a", "us-central1-b", "europe-west4-a"
POOL_LABEL = "comfyburst-pool=createtest"
TEMPLATE = {
    "name": "gpu-l4",
    "properties": {
        "machineType": "g2-standard-8",
        "guestAccelerators": [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}],
        "labels": {"comfyburst-pool": "createtest"},
        "scheduling": {"provisioningModel": "STANDARD"},
    },
}


class Pool:
    """A stand-in, the settings pointed at it, and a dispatcher on the real adapters."""

    def __init__(self, standin: ComputeStandin, settings: Any) -> None:
        self.standin, self.settings = standin, settings
        self.store = wiring.job_store(settings)
        self.fleet = wiring.fleet(settings)
        self.clock = wiring.clock()
        self.dispatcher = Dispatcher(self.store, self.fleet, self.clock, settings, 0.0)

    def job(self, index: int = 0, attempt: int = 1) -> Job:
        request = JobRequest.model_validate({"workflow": WORKFLOW, "models": []})
        job = new_job(
            job_id=f"create-{uuid.uuid4().hex[:8]}-{index}",
            request=request,
            workflow_bytes=100,
            now=self.clock.now(),
            max_attempts=3,
            ttl_days=1,
        )
        self.store.create_job(job)
        return job

    def vm(self, name: str) -> dict[str, Any]:
        return self.standin.instance(name)


@pytest.fixture
def make_pool(
    function_settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Pool]]:
    started: list[ComputeStandin] = []

    def make(zones: list[str], settings: dict[str, Any] | None = None, **standin: Any) -> Pool:
        config = ComputeStandinConfig(
            project=function_settings.project_id,
            zones=[US_A, US_B, EU_A],
            templates=[TEMPLATE],
            staging_s=0.05,
            stopping_s=0.05,
            guest=None,
            log_dir=tmp_path_factory.mktemp("create-compute"),
            **standin,
        )
        running = ComputeStandin(config)
        running.start()
        started.append(running)
        suffix = uuid.uuid4().hex[:8]
        updated = function_settings.model_copy(
            update={
                "jobs_collection": f"createtest_jobs_{suffix}",
                "vms_collection": f"createtest_vms_{suffix}",
                "compute_endpoint": running.base_url,
                "pool_zones": zones,
                "pool_label": POOL_LABEL,
                "pool_template": "global/instanceTemplates/gpu-l4",
                "pool_name_prefix": "cb-gpu",
                "create_wait_s": 2.0,
                **(settings or {}),
            }
        )
        return Pool(running, updated)

    yield make
    for running in started:
        running.stop()


def test_the_first_job_creates_a_vm_from_the_template(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([US_A])
    assert pool.standin.instances() == []  # a deployment starts with zero VMs
    job = pool.job()
    outcome = pool.dispatcher.dispatch(job)
    assert outcome.started, outcome.reason
    assert outcome.tried == [(outcome.vm.name, "created")]
    vm = pool.vm(outcome.vm.name)
    assert vm["zone"] == US_A and vm["status"] in ("PROVISIONING", "STAGING", "RUNNING")
    assert vm["labels"] == {
        "comfyburst-pool": "createtest",
        "comfyburst-origin": "dispatcher",
        "comfyburst-class": "default",  # the class derived from the pool_* settings
    }
    assert "comfyburst-job" not in vm["metadata"]  # its worker reads the lease instead
    assert vm["metadata"]["comfyburst-class"] == "default"  # what its worker reads
    assert vm["source_template"].endswith("global/instanceTemplates/gpu-l4")
    record, _ = pool.store.get_vm(outcome.vm.name)
    assert record.lease.job_id == job.job_id
    assert pool.store.get_job(job.job_id).state is JobState.STARTING


def test_a_stockout_is_followed_to_the_zones_compute_names(
    make_pool: Callable[..., Pool],
) -> None:
    # EU is full with nothing to suggest; us-central1-a is full and names us-central1-b.
    pool = make_pool([EU_A, US_A, US_B], zone_capacity_vms={EU_A: 0, US_A: 0})
    first = pool.dispatcher.dispatch(pool.job(0))
    assert first.started
    reasons = [reason for _, reason in first.tried]
    assert reasons == [
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "created",
    ]
    assert first.vm.zone == US_B
    # Both refusing zones cool down: the next job goes straight to the zone with capacity.
    second = pool.dispatcher.dispatch(pool.job(1))
    assert [r for _, r in second.tried] == ["created"] and second.vm.zone == US_B
    assert pool.standin.stats()["created"] == 4  # two refused, two created


def test_quota_refusal_moves_to_another_region(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([US_A, EU_A], region_gpu_quota={"us-central1": 0})
    outcome = pool.dispatcher.dispatch(pool.job())
    assert [r for _, r in outcome.tried] == ["QUOTA_EXCEEDED", "created"]
    assert outcome.vm.zone == EU_A


def test_a_stopped_vm_is_reused_before_creating(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([US_A])
    first = pool.dispatcher.dispatch(pool.job(0))
    name = first.vm.name
    # The job ends and the VM is stopped, its lease released (as the worker's drain does).
    pool.fleet.stop(US_A, name, str(uuid.uuid4()))
    record, version = pool.store.get_vm(name)
    pool.store.put_vm(record.model_copy(update={"lease": None}), version)
    poll_until(lambda: pool.vm(name)["status"] == "TERMINATED", f"{name} to stop", timeout_s=10)
    second = pool.dispatcher.dispatch(pool.job(1))
    assert second.started and second.vm.name == name
    assert second.tried == [(name, "started")]
    assert pool.standin.stats()["created"] == 1


def test_a_retried_create_is_the_same_create(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([US_A])
    job = pool.job()
    placement = pool.dispatcher.dispatch(job)
    name = placement.vm.name
    # The job is stored with its lease: placing it as new again is refused, nothing created.
    with pytest.raises(JobExists):
        pool.dispatcher.place_new(job)
    assert pool.standin.stats()["created"] == 1
    # The same attempt back in the queue with its VM stopped (a start given back): the same
    # name, so Compute refuses a second VM and the dispatcher starts that one again.
    pool.fleet.stop(US_A, name, str(uuid.uuid4()))
    poll_until(lambda: pool.vm(name)["status"] == "TERMINATED", "the stop")
    record, version = pool.store.get_vm(name)
    pool.store.put_vm(record.model_copy(update={"lease": None}), version)
    back = pool.store.update_job(
        job.job_id, lambda j: j.model_copy(update={"state": JobState.QUEUED, "vm": None})
    )
    again = Dispatcher(pool.store, pool.fleet, pool.clock, pool.settings, 0.0).dispatch(back)
    assert again.started and again.vm.name == name and again.vm.operation
    poll_until(lambda: pool.vm(name)["status"] == "RUNNING", "the restart")
    assert pool.standin.stats()["created"] == 1
    # Another attempt of the job is another VM name.
    retry = job.model_copy(update={"job_id": f"{job.job_id}-2", "attempt": 2})
    assert pool.dispatcher.place_new(retry).vm.name != name


def test_the_pool_limits_hold(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([US_A, US_B], settings={"pool_max_vms": 3, "pool_max_vms_per_zone": 2})
    outcomes = [pool.dispatcher.dispatch(pool.job(i)) for i in range(4)]
    assert [o.started for o in outcomes] == [True, True, True, False]
    zones = sorted(o.vm.zone for o in outcomes[:3])
    assert zones.count(US_A) <= 2 and zones.count(US_B) <= 2
    assert outcomes[3].reason == "no free VM"
    assert len(pool.standin.instances()) == 3


def test_a_lease_held_by_another_job_is_not_taken(make_pool: Callable[..., Pool]) -> None:
    from datetime import timedelta

    from comfyburst.domain.scheduling import vm_name
    from comfyburst.schema import Lease

    pool = make_pool([US_A, US_B])
    job = pool.job()
    taken = vm_name("cb-gpu", job.job_id, 1, US_A)
    until = pool.clock.now() + timedelta(minutes=5)
    pool.store.put_vm(
        VmRecord(name=taken, zone=US_A, lease=Lease(job_id="someone-else", expires_at=until)),
        None,
    )
    outcome = pool.dispatcher.dispatch(job)
    assert outcome.started
    assert outcome.vm.name != taken and outcome.vm.zone == US_B
    assert (taken, "lost") in outcome.tried


def test_the_reaper_deletes_idle_and_unknown_created_vms_only(
    make_pool: Callable[..., Pool],
) -> None:
    from datetime import timedelta

    from comfyburst.services.prune import prune_pool

    pool = make_pool([US_A])
    idle = pool.dispatcher.dispatch(pool.job(0)).vm.name
    recent = pool.dispatcher.dispatch(pool.job(1)).vm.name
    now = pool.clock.now()
    for name, seen in ((idle, now - timedelta(days=15)), (recent, now - timedelta(days=1))):
        pool.fleet.stop(US_A, name, str(uuid.uuid4()))
        record, version = pool.store.get_vm(name)
        pool.store.put_vm(record.model_copy(update={"lease": None, "last_seen": seen}), version)
    # Made by the dispatcher's label but known to no document; and one made by other means.
    template = "global/instanceTemplates/gpu-l4"
    body = {"name": "cb-gpu-orphan", "labels": {"comfyburst-origin": "dispatcher"}}
    pool.standin.fleet.insert(pool.settings.project_id, US_A, body, template)
    pool.standin.fleet.insert(pool.settings.project_id, US_A, {"name": "someone-elses"}, template)
    for name in (idle, recent, "cb-gpu-orphan", "someone-elses"):
        poll_until(
            lambda name=name: pool.vm(name)["status"] in ("RUNNING", "TERMINATED"),
            f"{name} to settle",
            timeout_s=10,
        )
    for name in ("cb-gpu-orphan", "someone-elses"):
        pool.fleet.stop(US_A, name, str(uuid.uuid4()))
    poll_until(
        lambda: all(v["status"] == "TERMINATED" for v in pool.standin.instances()),
        "every VM to stop",
        timeout_s=10,
    )
    deleted = prune_pool(pool.store, pool.fleet, now, idle_delete_days=14)
    assert sorted((d["vm"], d["why"]) for d in deleted) == sorted(
        [(idle, "unused for 14 days"), ("cb-gpu-orphan", "no vms/ document knows it")]
    )
    poll_until(
        lambda: {v["name"] for v in pool.standin.instances()} == {recent, "someone-elses"},
        "the idle and unknown VMs to be deleted",
        timeout_s=10,
    )
    # A deleted VM's document holds the delete lease: no dispatcher starts it meanwhile.
    assert pool.store.get_vm(idle)[0].lease.job_id == f"delete:{idle}"
    assert prune_pool(pool.store, pool.fleet, now, idle_delete_days=14) == []
