"""Lifecycle edges on the local cloud (Firestore emulator, fake-gcs-server, Compute stand-in):
a retried placement gets a real start, the reaper sees every live job, an unreadable done flag
blocks no retry, and contended job updates back off instead of failing."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from comfyburst.adapters.clock import SystemClock
from comfyburst.adapters.firestore_store import FirestoreJobStore, job_doc
from comfyburst.domain.reaper import ReaperPolicy
from comfyburst.schema import DoneManifest, VmRecord, VmRef
from comfyburst.services.dispatch import Dispatcher
from comfyburst.services.reap import ReaperDeps, run_reaper
from comfyburst.states import JobState
from tests._completion_helpers import make_job, manifest
from tests._poll import poll_until
from tests._worker_support import local_config, local_settings, make_agent
from tests.fakes import InMemoryJobStore

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@pytest.fixture
def no_guest_workers():
    """VMs run but start no worker (nothing in them claims or powers off)."""
    endpoint = os.environ["COMFYBURST_COMPUTE_ENDPOINT"]
    body = {"kind": "boot_failure", "count": "always"}
    requests.post(f"{endpoint}/_standin/faults", json=body, timeout=10).raise_for_status()
    yield
    requests.delete(f"{endpoint}/_standin/faults", timeout=10)


def test_retried_placement_on_the_same_vm_is_started_again(
    function_settings, job_store, fleet, no_guest_workers
):
    """A job whose VM was stopped and whose lease was given back is placed again (same job id
    and attempt, same VM): it must get a start Compute applies, not one it drops as a
    duplicate (each lease commit has its own expiry, so its own request id)."""
    pool = fleet.list()
    target, others = pool[0], pool[1:]
    until = datetime.now(UTC) + timedelta(hours=1)
    for other in others:  # only `target` is a candidate
        job_store.put_vm(VmRecord(name=other.name, zone=other.zone, cooldown_until=until), None)
    job = make_job(f"retry-{uuid.uuid4().hex[:8]}", datetime.now(UTC))
    first = Dispatcher(job_store, fleet, SystemClock(), function_settings).place_new(job)
    assert first.vm is not None and first.vm.name == target.name
    _give_back(job_store, fleet, job.job_id, target)
    # The retry: a new process, a new dispatcher, the same job id and attempt.
    queued = job_store.get_job(job.job_id)
    second = Dispatcher(job_store, fleet, SystemClock(), function_settings).dispatch(queued)
    assert second.vm is not None and second.vm.name == target.name
    poll_until(
        lambda: fleet.get(target.zone, target.name).status in ("STAGING", "RUNNING"),
        "the retried start to be applied",
        timeout_s=20,
    )
    _give_back(job_store, fleet, job.job_id, target)


def _give_back(job_store, fleet, job_id, target) -> None:
    """Stop the VM, release its lease, put the job back in the queue at the same attempt."""
    fleet.stop(target.zone, target.name, str(uuid.uuid4()))
    poll_until(
        lambda: fleet.get(target.zone, target.name).status == "TERMINATED",
        "the stop",
        timeout_s=20,
    )
    record, version = job_store.get_vm(target.name)
    job_store.put_vm(record.model_copy(update={"lease": None}), version)
    job_store.update_job(
        job_id, lambda j: j.model_copy(update={"state": JobState.QUEUED, "vm": None})
    )


def test_reaper_sees_every_live_job_past_a_long_backlog(
    function_settings, job_store, fleet, publisher
):
    """505 older queued jobs; the newest is past its deadline and must still be timed out."""
    client = job_store._client  # seeding documents in bulk, as a backlog would have built up
    collection = client.collection(function_settings.jobs_collection)
    now = datetime.now(UTC)
    # Older than the late job, each well inside its own deadline.
    backlog = [
        make_job(f"backlog-{i:04d}", now - timedelta(seconds=300 - i / 10)) for i in range(505)
    ]
    for start in range(0, len(backlog), 400):
        batch = client.batch()
        for job in backlog[start : start + 400]:
            batch.set(collection.document(job.job_id), job_doc(job))
        batch.commit()
    late = make_job("newest-late", now - timedelta(seconds=120), timeout_s=60)
    job_store.create_job(late)
    deps = ReaperDeps(job_store, fleet, publisher, SystemClock())
    policy = ReaperPolicy(boot_timeout_s=600, heartbeat_timeout_s=120, max_attempts=3)
    summary = run_reaper(deps, policy, now)
    assert job_store.get_job("newest-late").state is JobState.TIMED_OUT, summary["counts"]
    # The backlog is within its deadlines: left live (the local cloud's own reaper timer may
    # have dispatched the oldest onto the pool meanwhile).
    assert not job_store.get_job("backlog-0000").state.terminal


def test_listing_pages_through_every_job(function_settings, job_store):
    small_pages = FirestoreJobStore(job_store._client, function_settings, list_page_size=3)
    now = datetime.now(UTC)
    jobs = [make_job(f"paged-{i}", now + timedelta(seconds=i)) for i in range(8)]
    for job in jobs:
        job_store.create_job(job)
    listed = small_pages.list_jobs([JobState.QUEUED], limit=None)
    assert [j.job_id for j in listed] == [j.job_id for j in jobs]
    assert [j.job_id for j in small_pages.list_jobs([JobState.QUEUED], limit=5)] == [
        j.job_id for j in jobs[:5]
    ]


def test_contended_updates_of_one_job_all_succeed(job_store, function_settings):
    """Duplicate done events and a cancel write one job at once: a transaction that lost is run
    again after a jittered backoff, and every update lands. One commit attempt per transaction
    makes the contention certain (with the client's retries alone, 3 of these 4 gave up)."""
    store = FirestoreJobStore(job_store._client, function_settings, transaction_attempts=1)
    job_store.create_job(make_job("contended", datetime.now(UTC), JobState.RUNNING))
    writers, errors = 4, []
    barrier = threading.Barrier(writers)

    def write(index: int) -> None:
        barrier.wait()
        try:
            store.update_job(
                "contended",
                lambda current: current.model_copy(
                    update={"queued_reason": f"{current.queued_reason or ''}{index}"}
                ),
            )
        except Exception as exc:  # every failure is the finding
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    assert errors == []
    # Every update applied exactly once: none lost among the reruns.
    assert sorted(job_store.get_job("contended").queued_reason) == [str(i) for i in range(writers)]


def test_unreadable_done_flag_does_not_block_a_later_attempt(
    tmp_path, blob_store, function_settings
):
    bucket, name = function_settings.signals_bucket, "jobs/j-garbled/done.json"
    config = local_config(signals_bucket=bucket)
    blob_store.write(bucket, name, b"\x00not json{", "application/json", if_generation_match=0)
    vm = VmRef(name="gpu-2", zone="zone-a")
    agent = make_agent(
        local_settings("http://127.0.0.1:9", tmp_path / "models"),
        config,
        InMemoryJobStore(),  # the flag write touches no job document
        blob_store,
        vm,
    )
    agent._write_done(manifest("j-garbled", datetime.now(UTC), attempt=2, vm="gpu-2"))
    stored = DoneManifest.model_validate_json(blob_store.read(bucket, name))
    assert (stored.job_id, stored.attempt, stored.vm) == ("j-garbled", 2, "gpu-2")
