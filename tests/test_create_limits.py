"""A GPU class's VM limits hold under concurrent creates (issue #14): the Firestore emulator,
the Compute stand-in and the real adapters, several dispatchers (each with its own cached
view of the pool, as separate processes have) placing jobs at once on an empty template pool."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from comfyburst.services.dispatch import Dispatcher, DispatchOutcome
from comfyburst.services.prune import prune_pool
from comfyburst.states import JobState
from tests import test_dispatch_create as _create_tests
from tests._concurrency import at_once
from tests._poll import poll_until
from tests.test_dispatch_create import US_A, US_B, Pool

pytestmark = pytest.mark.emulator

THREADS = 6
make_pool = _create_tests.make_pool  # the same fixture: a stand-in and settings on it


def _dispatch_at_once(pool: Pool, count: int) -> list[DispatchOutcome]:
    """`count` jobs, each dispatched by its own Dispatcher, all released together."""
    jobs = [pool.job(i) for i in range(count)]
    dispatchers = [Dispatcher(pool.store, pool.fleet, pool.clock, pool.settings, 0.0) for _ in jobs]
    outcomes = at_once(count, lambda index: dispatchers[index].dispatch(jobs[index]))
    done = [o for o in outcomes if o is not None]
    assert len(done) == count
    return done


def _assert_rest_queued(pool: Pool, outcomes: list[DispatchOutcome], started: int) -> None:
    assert sum(1 for o in outcomes if o.started) == started
    for outcome in outcomes:
        if outcome.started:
            continue
        assert outcome.reason == "no free VM"  # the reason a class at its limit gives
        job = pool.store.get_job(outcome.job.job_id)
        assert job is not None and job.state is JobState.QUEUED and job.vm is None


def test_concurrent_creates_stay_within_max_vms(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([US_A, US_B], settings={"pool_max_vms": 2, "pool_max_vms_per_zone": 8})
    outcomes = _dispatch_at_once(pool, THREADS)
    assert len(pool.standin.instances()) <= 2
    _assert_rest_queued(pool, outcomes, started=len(pool.standin.instances()))
    assert len(pool.standin.instances()) == 2  # the limit is also reached, not undershot


def test_concurrent_creates_stay_within_max_vms_per_zone(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([US_A, US_B], settings={"pool_max_vms": 8, "pool_max_vms_per_zone": 1})
    outcomes = _dispatch_at_once(pool, THREADS)
    zones = [vm["zone"] for vm in pool.standin.instances()]
    assert zones.count(US_A) <= 1 and zones.count(US_B) <= 1
    _assert_rest_queued(pool, outcomes, started=len(zones))


def test_a_pruned_vm_gives_its_slot_back(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([US_A], settings={"pool_max_vms": 1, "pool_max_vms_per_zone": 1})
    first = pool.dispatcher.dispatch(pool.job(0))
    assert first.started and first.vm is not None
    name = first.vm.name
    poll_until(lambda: pool.vm(name)["status"] == "RUNNING", "the VM to boot", timeout_s=10)
    pool.fleet.stop(US_A, name, str(uuid.uuid4()))
    poll_until(lambda: pool.vm(name)["status"] == "TERMINATED", "the VM to stop", timeout_s=10)
    record, version = pool.store.get_vm(name)
    assert record is not None
    idle = pool.clock.now() - timedelta(days=15)
    pool.store.put_vm(record.model_copy(update={"lease": None, "last_seen": idle}), version)
    deleted = prune_pool(pool.store, pool.fleet, pool.clock.now(), idle_delete_days=14)
    assert [d["vm"] for d in deleted] == [name]
    poll_until(lambda: pool.standin.instances() == [], "the VM to be deleted", timeout_s=10)
    # Its reservation is young (it would count until it ages out) but prune released it.
    again = Dispatcher(pool.store, pool.fleet, pool.clock, pool.settings, 0.0)
    created = again.dispatch(pool.job(2))
    assert created.started, created.reason
