"""Benchmark the pool at scale: 2,000 jobs over up to 32 VMs made on demand in 3 zones of 2
regions, against the ideal makespan and a run with 8 VMs (same ideal) in the same process.

Run: `.venv/bin/python -m tests.bench.bench_scale [--jobs 2000] [--vms 32] [--work-s 1.0]`.

Starts the local cloud's emulators and its Compute stand-in (a pool of templates: no VM at the
start) in their own processes; submits every job through the submit use case in this process
and lets the system run them: the dispatcher creates or starts VMs, the simulated guests run
the real worker agent (claim, lease, heartbeat, drain, done flag) holding each job for the
stated work time, the bucket's notifications drive the completion use case, and the reaper runs
every few seconds. What is real and what is simulated: `tests/bench/_scale_sim.py`, and the
`real` / `simulated` entries of the output.

Per run it reports the makespan (first submit to last job terminal) ÷ (Σwork / VMs), the tail
after the last submit (the submits share this process and its 2 CPUs with 32 agents), the most
writes within one second on any one Firestore document (Firestore's guidance for one document
is about one sustained write per second), writes per job, VMs created vs reused (starts of a
stopped VM), and how the jobs ended. A run is cut off after `--max-s` (submitting included),
so the benchmark ends on a slow machine: it then reports how many jobs were submitted and
ended, no makespan, and the throughput (jobs ended per second ÷ VMs / work time) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.bench._scale_sim import CountingStore, DonePump, Guests, Periodic, WriteLog, idle_parts

ZONES = ("us-central1-a", "us-central1-b", "europe-west4-a")
WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "scale"}},
}


@dataclass(frozen=True)
class Delays:
    """The stand-in's boot and stop delays and the simulated guest's, all stated."""

    create_to_running_s: float = 2.0  # PROVISIONING + STAGING (the stand-in's staging_s)
    guest_boot_s: float = 1.0  # RUNNING -> the agent claims (the simulated guest)
    stopping_s: float = 0.5  # STOPPING -> TERMINATED
    drain_grace_s: float = 5.0  # an idle agent looks for work this long, then powers off
    boot_timeout_s: int = 30  # the reaper retries a job whose VM never claimed it
    heartbeat_timeout_s: int = 30  # the reaper retries a running job without heartbeats


def _settings(env: dict[str, str], vms: int, delays: Delays) -> Any:
    from comfyburst.settings import FunctionSettings

    os.environ.update(env)
    os.environ["COMFYBURST_DRAIN_GRACE_S"] = str(delays.drain_grace_s)
    # The reaper's thresholds, short enough that it recovers a lost job within the run.
    os.environ["COMFYBURST_BOOT_TIMEOUT_S"] = str(delays.boot_timeout_s)
    os.environ["COMFYBURST_HEARTBEAT_TIMEOUT_S"] = str(delays.heartbeat_timeout_s)
    return FunctionSettings().model_copy(
        update={
            "pool_zones": list(ZONES),
            "pool_max_vms": vms,
            # No zone holds the whole pool: at least two zones (and so two regions' worth of
            # candidates when one is full) take part.
            "pool_max_vms_per_zone": max(1, (vms + 1) // 2),
        }
    )


def _services(store: Any, blobs: Any, clock: Any) -> Any:
    from comfyburst.schema import DeploymentConfig
    from comfyburst_worker.claims import LeaseKeeper
    from comfyburst_worker.job_runner import Services
    from comfyburst_worker.settings import WorkerSettings

    worker_settings = WorkerSettings()
    idle = idle_parts()

    def build(vm: Any, metadata: dict[str, str]) -> Any:
        # The deployment config as the VM got it in its metadata from the dispatcher.
        config = DeploymentConfig.model_validate_json(metadata["comfyburst-config"])
        leases = LeaseKeeper(store, vm, clock, config.lease_ttl_s)
        return Services(
            worker_settings, config, store, blobs, clock, idle, idle, idle, leases, idle, idle
        )

    return build


def _compute(env: dict[str, str]) -> tuple[Any, Any]:
    base, project = env["COMFYBURST_COMPUTE_ENDPOINT"], env["COMFYBURST_PROJECT_ID"]
    session = requests.Session()

    def instances() -> list[dict[str, Any]]:
        response = session.get(f"{base}/_standin/instances", timeout=30)
        response.raise_for_status()
        return list(response.json()["instances"])

    def power_off(zone: str, name: str) -> None:
        url = f"{base}/compute/v1/projects/{project}/zones/{zone}/instances/{name}/stop"
        session.post(url, timeout=30)

    return instances, power_off


def run_once(
    env: dict[str, str], vms: int, jobs: int, work_s: float, delays: Delays, max_s: float
) -> dict[str, Any]:
    """One run on a fresh cloud, cut off after `max_s`; the row of the report."""
    from comfyburst import wiring
    from comfyburst.api import build_api_deps
    from comfyburst.services.complete import (
        CompletionDeps,
        handle_done_flag,
        parse_storage_event,
    )
    from comfyburst.services.reap import ReaperDeps, policy_from, run_reaper
    from comfyburst.services.submit import submit_job
    from localcloud.config import EVENTARC_SUBSCRIPTION

    settings = _settings(env, vms, delays)
    writes = WriteLog()
    storage = wiring.storage_client(settings)
    store = CountingStore(wiring.job_store(settings), writes)
    blobs = wiring.blob_store(settings, storage)
    signer, publisher = wiring.url_signer(settings, storage), wiring.publisher(settings)
    clock, fleet = wiring.clock(), wiring.fleet(settings)
    api = build_api_deps(
        settings,
        store=store,
        blobs=blobs,
        signer=signer,
        publisher=publisher,
        fleet=fleet,
        clock=clock,
        io=ThreadPoolExecutor(16, thread_name_prefix="api-io"),
    )
    completion = CompletionDeps(
        store, blobs, signer, publisher, clock, settings.signals_bucket, settings.outputs_bucket
    )
    reaper = ReaperDeps(
        store,
        fleet,
        publisher,
        clock,
        api.dispatcher.dispatch_many,
        blobs=blobs,
        signer=signer,
        signals_bucket=settings.signals_bucket,
        outputs_bucket=settings.outputs_bucket,
    )
    policy = policy_from(settings)

    def complete(data: bytes) -> None:
        obj = parse_storage_event(data)
        if obj.bucket == settings.signals_bucket:
            handle_done_flag(completion, obj)

    instances, power_off = _compute(env)
    subscription = f"projects/{settings.project_id}/subscriptions/{EVENTARC_SUBSCRIPTION}"
    guests = Guests(
        instances, power_off, _services(store, blobs, clock), work_s, delays.guest_boot_s
    )
    pump = DonePump(subscription, complete, workers=8)
    reaping = Periodic(lambda: run_reaper(reaper, policy), period_s=5.0)
    body = json.dumps({"workflow": WORKFLOW, "options": {"timeout_s": 3600}}).encode()
    submit_deps = api.submit_deps()
    for part in (guests, pump, reaping):
        part.start()
    began, began_wall = time.monotonic(), time.time()
    deadline = began + max_s
    submitter = _Submitter(lambda: submit_job(submit_deps, body, idempotency_key=None, caller=None))
    try:
        submitter.run(jobs, deadline)
        while len(writes.terminal) < len(submitter.ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        submitted, submit_s = submitter.ids, submitter.took_s
        # The documents decide (a job another path ended is not in the write log).
        live = _wait_live(store, deadline)
        ended = _terminal_at(store, submitted)
        last = max(ended) - began_wall if ended else float("nan")
        stopped_after = _all_stopped(instances, delays.drain_grace_s + 30)
        states = _not_succeeded(store)
    finally:
        for part in (guests, pump, reaping):
            part.stop()
        store.fence()  # agents still busy fail at their next call instead of writing on
        for part in (guests, pump, reaping):
            part.close()
    stats = requests.get(f"{env['COMFYBURST_COMPUTE_ENDPOINT']}/_standin/stats", timeout=30)
    counters = stats.json()
    peak, peak_doc, docs = writes.peak_per_document()
    ideal = jobs * work_s / vms
    finished = len(ended) == jobs
    # Jobs per second against what the VMs could do (VMs / work time): 1.0 is ideal.
    efficiency = len(ended) / last / (vms / work_s) if ended and last > 0 else None
    return {
        "vms": vms,
        "jobs": jobs,
        "work_s": work_s,
        "makespan_s": round(last, 1) if finished else None,
        "ideal_s": round(ideal, 1),
        "makespan_over_ideal": round(last / ideal, 2) if finished else None,
        "ended_in_run": len(ended),
        "cut_off_at_s": None if finished else max_s,
        "throughput_over_ideal": None if efficiency is None else round(efficiency, 3),
        "submitted": len(submitted),
        "submit_s": round(submit_s, 1),
        # How long the pool took to finish once the last job was in: a run limited by how fast
        # this one process can submit shows a short tail here and a long makespan above.
        "tail_after_last_submit_s": round(last - submit_s, 1) if finished else None,
        "peak_writes_1s_one_doc": peak,
        "peak_doc": peak_doc.split("/", 1)[0] + "/…",
        "writes_per_submitted_job": round(len(writes.writes) / max(1, len(submitted)), 1),
        "docs_written": docs,
        "vms_created": counters.get("created", 0),
        # Above `vms` when concurrent placements each saw room under the limit.
        "vms_at_end": len(instances()),
        "vms_reused": counters.get("started", 0),
        "not_succeeded": states,
        "live_at_end": live,
        "vms_up_after_s": stopped_after,
        "agent_errors": guests.agent_errors,
        "completion_errors": pump.errors,
        "reaper_periods": reaping.runs,
    }


class _Submitter:
    """Submits jobs from 8 threads until `jobs` are in or the run's deadline passed."""

    def __init__(self, submit: Any) -> None:
        self.submit = submit
        self.ids: list[str] = []
        self.took_s = 0.0
        self._lock = threading.Lock()

    def run(self, jobs: int, deadline: float) -> None:
        began = time.monotonic()

        def one(_: int) -> None:
            if time.monotonic() < deadline:
                job_id = self.submit().job.job_id
                with self._lock:
                    self.ids.append(job_id)

        with ThreadPoolExecutor(8, thread_name_prefix="submit") as pool:
            list(pool.map(one, range(jobs)))
        self.took_s = time.monotonic() - began


def _not_succeeded(store: Any) -> dict[str, int]:
    from comfyburst.states import JobState

    ended = (JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED)
    return {s.value: n for s in ended if (n := len(store.list_jobs([s], limit=None)))}


def _wait_live(store: Any, deadline: float) -> dict[str, int]:
    """Poll until no job is live or `deadline`; the live jobs by state then."""
    from comfyburst.states import JobState

    while True:
        live = store.list_jobs([JobState.QUEUED, JobState.STARTING, JobState.RUNNING], limit=None)
        if not live or time.monotonic() >= deadline:
            counts: dict[str, int] = {}
            for job in live:
                counts[job.state.value] = counts.get(job.state.value, 0) + 1
            return counts
        time.sleep(2.0)


def _terminal_at(store: Any, ids: list[str]) -> list[float]:
    """When each terminal job of `ids` ended (epoch seconds, from its document)."""
    from comfyburst.states import JobState

    wanted = set(ids)
    states = [JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED]
    return [
        job.state_changed_at.timestamp()
        for job in store.list_jobs(states, limit=None)
        if job.job_id in wanted
    ]


def _all_stopped(instances: Any, timeout_s: float) -> float | None:
    """Seconds until every VM is TERMINATED (None: some still up after `timeout_s`)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if all(vm["status"] == "TERMINATED" for vm in instances()):
            return round(time.monotonic() - began, 1)
        time.sleep(0.5)
    return None


REAL = (
    "Firestore, Pub/Sub and Cloud Storage emulators; the Compute stand-in (own process: "
    "instances.insert from the template, start, stop, boot delays); in this process the submit "
    "use case, the dispatcher, the worker agent (claims, lease keeper, heartbeat, drain, done "
    "flag), the completion use case fed by the bucket's notifications, the reaper every 5 s"
)
SIMULATED = (
    "the VM guest: a thread per boot runs the real agent after the stated guest boot time; its "
    "job runner holds each job for the stated work time (no ComfyUI, no model fetch, no "
    "outputs); the guest's poweroff is a stop call"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--vms", type=int, default=32)
    parser.add_argument("--work-s", type=float, default=1.0, help="each job's work time")
    parser.add_argument(
        "--max-s", type=float, default=90.0, help="cut a run off after this long (it then "
        "reports how many jobs ended and the throughput)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline-vms", type=int, default=8, help="a second run with these VMs and jobs cut to "
        "the same ideal makespan; 0: none",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from localcloud.cloud import LocalCloud
    from localcloud.config import LocalCloudConfig

    logging_quiet()
    delays = Delays()
    load_at_start = round(os.getloadavg()[0], 1)
    runs = [(args.vms, args.jobs)]
    if args.baseline_vms:
        runs.append((args.baseline_vms, max(1, args.jobs * args.baseline_vms // args.vms)))
    rows = []
    for vms, jobs in runs:
        # A fresh cloud per run: a cut-off run can leave emulator transactions open, which
        # block a wipe (409) for minutes.
        config = LocalCloudConfig.ephemeral(
            Path(tempfile.mkdtemp(prefix="bench-scale-")),
            start_functions=False,
            pool_template=True,
            pool_size=vms,
            zones=ZONES,
            guest_argv=None,  # no guest process: the simulated guests run in this process
            compute_staging_s=delays.create_to_running_s,
            compute_stopping_s=delays.stopping_s,
            reaper_period_s=3600.0,
        )
        with LocalCloud(config) as cloud:
            rows.append(run_once(dict(cloud.env), vms, jobs, args.work_s, delays, args.max_s))
        print(rows[-1], flush=True)
    meta = {
        "zones": f"{', '.join(ZONES)} (2 regions); at most {(args.vms + 1) // 2} VMs per zone",
        "delays": (
            f"stand-in create/start to RUNNING {delays.create_to_running_s} s, stop "
            f"{delays.stopping_s} s; simulated guest boot {delays.guest_boot_s} s; drain grace "
            f"{delays.drain_grace_s} s (short, for the run to fit here; Compute Engine's own are "
            "tens of seconds)"
        ),
        "work": f"{args.work_s} s per job, held by the agent's job runner",
        "baseline": "ideal = Σwork / VMs; and a run with fewer VMs and jobs for the same ideal",
        "writes": "per document, counted at the store adapter (every commit, transaction that "
        "wrote, patch); peak = most within any 1 s window",
        "real": REAL,
        "simulated": SIMULATED,
        "cpus": os.cpu_count(),
        # A shared 2-CPU machine: other sessions' load inflates every number here.
        "load_average_1m_at_start": load_at_start,
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
    }
    from tests.bench._report import write_report

    write_report("scale", rows, meta)
    return 0


def logging_quiet() -> None:
    """Warnings only: thousands of jobs would otherwise log every claim."""
    import logging

    logging.basicConfig(level=logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
