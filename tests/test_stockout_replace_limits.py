"""Replacing stopped VMs pinned by a stockout keeps a class's limits (issue #22 item 6): the
Firestore emulator, the Compute stand-in and the real adapters, several dispatchers (each with
its own cached view, as separate processes have) placing jobs at once on a class at `max_vms`
whose stopped VMs all sit in a stocked-out zone. At no moment does Compute hold more VMs of
the class than `max_vms`; one stopped VM is deleted, and its successor is created in the zone
with capacity only once Compute no longer lists it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
import requests

from comfyburst.domain.scheduling import REASON_REPLACING
from comfyburst.services.dispatch import Dispatcher
from comfyburst.states import JobState
from tests import test_dispatch_create as _create_tests
from tests._concurrency import at_once
from tests._poll import poll_until
from tests.test_dispatch_create import US_A, US_B, Pool

pytestmark = pytest.mark.emulator

THREADS = 6
make_pool = _create_tests.make_pool  # the same fixture: a stand-in and settings on it


def _capacity(pool: Pool, **zones: int) -> None:
    body = {"zone_capacity_vms": {zone.replace("_", "-"): n for zone, n in zones.items()}}
    url = f"{pool.standin.base_url}/_standin/capacity"
    requests.post(url, json=body, timeout=10).raise_for_status()


def _stopped_pool_in_us_a(pool: Pool, count: int) -> list[str]:
    """`count` VMs created for jobs in us-central1-a, then stopped with no lease."""
    names = []
    for index in range(count):
        outcome = pool.dispatcher.dispatch(pool.job(100 + index))
        assert outcome.started and outcome.vm is not None and outcome.vm.zone == US_A
        names.append(outcome.vm.name)
    for name in names:
        poll_until(lambda n=name: pool.vm(n)["status"] == "RUNNING", "a boot", timeout_s=10)
        pool.fleet.stop(US_A, name, str(uuid.uuid4()))
    for name in names:
        poll_until(lambda n=name: pool.vm(n)["status"] == "TERMINATED", "a stop", timeout_s=10)
        record, version = pool.store.get_vm(name)
        assert record is not None
        pool.store.put_vm(record.model_copy(update={"lease": None}), version)
    return names


def test_concurrent_dispatchers_replace_one_pinned_vm_within_the_limits(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool([US_A, US_B], settings={"pool_max_vms": 2, "pool_max_vms_per_zone": 2})
    _capacity(pool, us_central1_b=0)
    old = _stopped_pool_in_us_a(pool, 2)
    _capacity(pool, us_central1_a=0)  # from now on nothing starts or is made in us-central1-a
    most, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            most[0] = max(most[0], len(pool.standin.instances()))
            stop.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        jobs = [pool.job(i) for i in range(THREADS)]
        dispatchers = [
            Dispatcher(pool.store, pool.fleet, pool.clock, pool.settings, 0.0, retires=True)
            for _ in jobs
        ]
        outcomes = at_once(THREADS, lambda i: dispatchers[i].dispatch(jobs[i]))
        assert not any(o.started for o in outcomes)  # the successor waits for the delete
        assert REASON_REPLACING in {o.reason for o in outcomes}
        # Each dispatcher (its own view, as separate processes have) replaces at most one VM,
        # one that was stopped and unleased; which and how many of the old ones go depends on
        # the interleaving (two views read before either delete lease may each take one).
        deleted = poll_until(
            lambda: [n for n in old if n not in {vm["name"] for vm in pool.standin.instances()}],
            "a delete",
            timeout_s=60,
        )
        assert 1 <= len(deleted) <= len(old)
        # A later pass creates the successor in the zone with capacity.
        later = Dispatcher(pool.store, pool.fleet, pool.clock, pool.settings, 0.0)
        created = later.dispatch(jobs[0])
        assert created.started and created.vm is not None, created.reason
        assert created.vm.zone == US_B
        assert pool.store.get_job(jobs[0].job_id).state is JobState.STARTING
    finally:
        stop.set()
        watcher.join()
    names = {vm["name"]: vm["zone"] for vm in pool.standin.instances()}
    assert names[created.vm.name] == US_B
    assert all(names[n] == US_A for n in old if n in names)  # nothing else moved
    assert most[0] <= 2  # max_vms held at every moment the watcher saw


def test_the_apis_dispatcher_leaves_the_replacement_to_the_reaper(
    make_pool: Callable[..., Pool],
) -> None:
    """The API's identity holds no compute.instances.delete (terraform/iam.tf): its dispatcher
    names the replacement as the job's reason and deletes nothing; the reaper's does it."""
    pool = make_pool([US_A, US_B], settings={"pool_max_vms": 2, "pool_max_vms_per_zone": 2})
    old = _stopped_pool_in_us_a(pool, 2)
    _capacity(pool, us_central1_a=0)
    api = Dispatcher(pool.store, pool.fleet, pool.clock, pool.settings, 0.0)
    outcome = api.dispatch(pool.job(0))
    assert not outcome.started and outcome.reason == REASON_REPLACING
    assert sorted(vm["name"] for vm in pool.standin.instances()) == sorted(old)
    reaper = Dispatcher(pool.store, pool.fleet, pool.clock, pool.settings, 0.0, retires=True)
    assert reaper.dispatch(pool.job(1)).reason == REASON_REPLACING
    poll_until(lambda: len(pool.standin.instances()) == 1, "the delete", timeout_s=60)
