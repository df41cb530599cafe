"""Spot preemption seen by the worker: the Compute stand-in's metadata server turns
`instance/preempted` TRUE, the agent interrupts ComfyUI, requeues the job at once (not an
attempt) and writes no done flag; the reaper does not count preemptions as attempts."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from comfyburst.adapters.clock import SystemClock
from comfyburst.domain import reaper
from comfyburst.domain.jobs import FREE_PREEMPTIONS, attempts_counted, requeue_preempted
from comfyburst.schema import VmRef
from comfyburst.states import JobState
from comfyburst_worker.preemption import PreemptionWatch
from localcloud.comfyui_standin import StandinServer
from localcloud.compute import ComputeStandin, ComputeStandinConfig
from tests._poll import poll_until
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

ZONE = "us-central1-a"
VM = VmRef(name="spot-1", zone=ZONE)
SPOT_TEMPLATE = {
    "name": "spot",
    "properties": {
        "machineType": "g2-standard-8",
        "guestAccelerators": [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}],
        "scheduling": {"provisioningModel": "SPOT", "instanceTerminationAction": "STOP"},
    },
}


@pytest.fixture
def comfyui(tmp_path: Path):
    server = StandinServer(tmp_path / "in", tmp_path / "out", tmp_path / "tmp")
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def spot_vm(tmp_path: Path):
    """A running Spot VM of the Compute stand-in (no guest: this test process is its agent)."""
    config = ComputeStandinConfig(
        zones=[ZONE],
        templates=[SPOT_TEMPLATE],
        staging_s=0.05,
        stopping_s=0.05,
        spot_shutdown_grace_s=2.0,
        guest=None,
        log_dir=tmp_path / "compute-logs",
    )
    with ComputeStandin(config) as standin:
        standin.fleet.insert(
            config.project, ZONE, {"name": VM.name}, "global/instanceTemplates/spot"
        )
        poll_until(
            lambda: standin.instance(VM.name)["status"] == "RUNNING",
            "the Spot VM to run",
            timeout_s=10,
            interval_s=0.02,
        )
        yield standin


def test_preemption_requeues_the_running_job_and_ends_the_agent(tmp_path, comfyui, spot_vm):
    requests.post(
        f"{comfyui}/_standin/faults",
        json={"slow_node_class": "ImageInvert", "slow_node_s": 20, "sampler_steps": 200},
        timeout=5,
    ).raise_for_status()
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    job = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    host = spot_vm.instance(VM.name)["metadata_host"]
    watch = PreemptionWatch(host, store, SystemClock(), VM.name).start()
    agent = make_agent(local_settings(comfyui, tmp_path / "m"), config, store, blobs, VM)
    agent.preemption = watch
    thread = threading.Thread(target=agent.run, args=(job.job_id,), daemon=True)
    began = time.monotonic()
    thread.start()
    while store.get_job(job.job_id).progress.node != "2":  # type: ignore[union-attr]
        assert time.monotonic() - began < 60, "the slow node never started"
        time.sleep(0.02)
    began = time.monotonic()  # the slow node runs: it would end 20 s from about now
    assert spot_vm.preempt(ZONE, VM.name)
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert time.monotonic() - began < 15  # long before the slow node would have ended
    stored = store.get_job(job.job_id)
    assert stored.state is JobState.QUEUED
    assert (stored.attempt, stored.preemptions, stored.queued_reason) == (2, 1, "preempted")
    assert stored.vm is None
    assert blobs.read("signals", f"jobs/{job.job_id}/done.json") is None  # no done flag
    history = requests.get(f"{comfyui}/history", timeout=5).json()
    messages = [m[0] for entry in history.values() for m in entry["status"]["messages"]]
    assert "execution_interrupted" in messages


def test_a_watch_without_a_running_job_only_reports(spot_vm):
    store = InMemoryJobStore()
    fired = threading.Event()
    host = spot_vm.instance(VM.name)["metadata_host"]
    watch = PreemptionWatch(host, store, SystemClock(), VM.name, on_preempted=fired.set).start()
    time.sleep(0.2)
    assert not watch.preempted.is_set()
    assert spot_vm.preempt(ZONE, VM.name)
    assert fired.wait(5) and watch.preempted.is_set()


def _job(attempt: int, preemptions: int):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    job = put_job(store, blobs, local_config(), make_request(invert_workflow()), VM)
    return job.model_copy(update={"attempt": attempt, "preemptions": preemptions})


def test_preemptions_are_not_attempts_up_to_the_cap():
    now = datetime.now(UTC)
    running = _job(1, 0).model_copy(update={"state": JobState.RUNNING})
    requeued = requeue_preempted(running, now)
    assert (requeued.attempt, requeued.preemptions) == (2, 1)
    assert attempts_counted(requeued) == 1
    many = _job(3 + FREE_PREEMPTIONS + 2, FREE_PREEMPTIONS + 2)
    assert attempts_counted(many) == 3 + 2  # past the cap, preemptions count


def test_the_reaper_retries_a_preempted_job_whose_attempts_would_be_spent():
    now = datetime.now(UTC)
    policy = reaper.ReaperPolicy(
        boot_timeout_s=1, heartbeat_timeout_s=60, lease_ttl_s=900, max_attempts=3
    )
    # Attempt 3 after two preemptions: only one counted attempt, so a stuck start is retried.
    job = _job(3, 2).model_copy(
        update={"state": JobState.STARTING, "dispatched_at": now.replace(year=2000)}
    )
    actions = reaper.plan([job], [], [], now, policy)
    assert any(isinstance(a, reaper.RequeueJob) and a.job_id == job.job_id for a in actions)
    spent = job.model_copy(update={"preemptions": 0})
    actions = reaper.plan([spent], [], [], now, policy)
    assert any(isinstance(a, reaper.FailJob) and a.job_id == job.job_id for a in actions)


_SHUTDOWN = """
import os, signal, sys
from comfyburst.adapters.clock import SystemClock
from comfyburst_worker.preemption import PreemptionWatch
from tests.fakes import InMemoryJobStore

watch = PreemptionWatch("127.0.0.1:9", InMemoryJobStore(), SystemClock(), "vm-x")
marker = sys.argv[1]
watch.shutdown_hooks.append(lambda: open(marker, "a").write("hook\\n"))
watch.shutdown_hooks.insert(0, lambda: 1 / 0)  # one failing hook stops none of the others
signal.signal(signal.SIGTERM, watch.on_shutdown_signal)
os.kill(os.getpid(), signal.SIGTERM)
open(marker, "a").write("survived\\n")
"""


def test_a_shutdown_signal_runs_the_hooks_then_ends_the_process(tmp_path: Path) -> None:
    """A stop (no preemption: the metadata server cannot even be read) still runs what the agent
    must record (its warm stretch), then ends the process as SIGTERM's default would."""
    import signal
    import subprocess
    import sys

    marker = tmp_path / "hooks"
    done = subprocess.run(
        [sys.executable, "-c", _SHUTDOWN, str(marker)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,  # the repository: `tests` importable
        check=False,
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert marker.read_text() == "hook\n"
    assert "shutdown hook failed" in done.stderr
