"""A draining worker inside its class's warm window stays up (holding `drain:warm:{vm}`) past
its drain grace, and powers off once the reaper takes that lease to stop it; outside the
window, or for another class's window, it powers off after its grace as before."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from comfyburst.adapters.clock import SystemClock
from comfyburst.domain.reaper import DRAIN_LEASE_PREFIX, warm_lease_id
from comfyburst.domain.reaper_actions import StartWarmVm, StopWarmVm
from comfyburst.schema import Lease, VmRecord, VmRef
from comfyburst.services._placement import METADATA_CONFIG_KEY
from comfyburst.services._warm_vms import WarmSkipped, apply_warm
from tests._worker_support import local_config, local_settings, make_agent
from tests.fakes import FakeFleet, InMemoryBlobStore, InMemoryJobStore

VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
ALL_DAY = [{"days": "daily", "from": "00:00", "to": "24:00", "time_zone": "UTC", "vms": 1}]


def _lease(store: InMemoryJobStore) -> tuple[str | None, object]:
    record, _ = store.get_vm(VM.name)
    lease = record.lease if record is not None else None
    return (lease.job_id, lease.expires_at) if lease else (None, None)


def _poll(check, deadline_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_another_classes_window_does_not_keep_this_vm(tmp_path: Path, standin: str) -> None:
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config(drain_grace_s=0.2, warm_schedule={"h100": ALL_DAY})
    started = time.monotonic()
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(None)
    assert time.monotonic() - started < 15
    assert _lease(store)[0] is None  # the drain lease released at power-off


def test_inside_the_window_it_stays_until_the_reaper_takes_the_lease(
    tmp_path: Path, standin: str
) -> None:
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config(drain_grace_s=0.2, warm_schedule={"default": ALL_DAY})
    agent = make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM)
    runner = threading.Thread(target=agent.run, args=(None,), daemon=True)
    runner.start()
    warm = warm_lease_id(VM.name)
    assert _poll(lambda: _lease(store)[0] == warm), _lease(store)
    first_expiry = _lease(store)[1]
    # Renewed at the end of the next grace: still up, still warm, several graces on.
    assert _poll(lambda: _lease(store)[0] == warm and _lease(store)[1] != first_expiry)
    assert runner.is_alive()

    fleet = FakeFleet([(VM.name, VM.zone)])
    action = StopWarmVm(VM.name, VM.zone, warm, "warm: outside the window")
    outcome = apply_warm(store, fleet, action, SystemClock().now(), "stop-1")
    assert outcome.startswith("operation ")
    runner.join(timeout=20)
    assert not runner.is_alive(), "the worker kept draining after its warm lease was taken"
    assert _lease(store)[0] == f"{DRAIN_LEASE_PREFIX}stop:{VM.name}"


def test_a_stop_is_skipped_once_the_worker_took_a_job() -> None:
    store, fleet = InMemoryJobStore(), FakeFleet([(VM.name, VM.zone)])
    now = SystemClock().now()
    lease = Lease(job_id="job-1", expires_at=now + timedelta(seconds=600))
    store.put_vm(VmRecord(name=VM.name, zone=VM.zone, lease=lease), None)
    action = StopWarmVm(VM.name, VM.zone, warm_lease_id(VM.name), "warm: beyond the count")
    with pytest.raises(WarmSkipped, match="no longer warm"):
        apply_warm(store, fleet, action, now, "stop-2")
    assert _lease(store)[0] == "job-1"
    assert ("stop", VM.name) not in fleet.calls


def test_a_warm_start_leases_the_drain_marker_and_brings_the_config_up_to_date() -> None:
    store, fleet = InMemoryJobStore(), FakeFleet([(VM.name, VM.zone)])
    now = SystemClock().now()
    config = local_config(warm_schedule={"default": ALL_DAY}).model_dump_json()
    action = StartWarmVm(VM.name, VM.zone, now + timedelta(seconds=600), "warm: keeps 1 up")
    assert apply_warm(store, fleet, action, now, "start-1", config).startswith("operation ")
    assert _lease(store)[0] == f"{DRAIN_LEASE_PREFIX}{VM.name}"
    assert fleet.calls == [("set_metadata", VM.name), ("start", VM.name)]
    assert fleet.vms[VM.name].metadata[METADATA_CONFIG_KEY] == config
    # Leased now: a second start in the same period is no one's to make.
    with pytest.raises(WarmSkipped, match="leased meanwhile"):
        apply_warm(store, fleet, action, now, "start-2", config)


def test_a_refused_warm_start_gives_the_lease_back() -> None:
    store, fleet = InMemoryJobStore(), FakeFleet([(VM.name, VM.zone)])
    fleet.stockout_zones.add(VM.zone)
    now = SystemClock().now()
    action = StartWarmVm(VM.name, VM.zone, now + timedelta(seconds=600), "warm: keeps 1 up")
    with pytest.raises(Exception, match="stockout"):
        apply_warm(store, fleet, action, now, "start-3")
    assert _lease(store)[0] is None
