"""The whole agent's overhead per job on a warm VM, on the local cloud's emulators: claim,
progress and heartbeat writes, output upload, done flag, next claim (everything but ComfyUI's
own execution). The agent's job loop runs in-process against emulator-backed adapters
(Firestore emulator, GCS emulator) and the ComfyUI stand-in; N jobs are queued up front and the
agent hands over from one to the next as it does on a VM.

Per job: interval = time between consecutive done flags (one full cycle of the loop);
overhead = interval - ComfyUI's execution time (manifest `execution_s`, from /history).
Baseline, same run, same stand-in: a bare HTTP + websocket client's overhead for the same
workflow (bench_comfy_drive's `Bare`). Target: agent overhead p50 <= 100 ms.

Run: `.venv/bin/python -m tests.bench.bench_worker_overhead [--jobs 40]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from comfyburst.schema import DoneManifest, VmRef
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.bench._report import write_report
from tests.bench.bench_comfy_drive import Bare, _exec_ms, _pct, _workflow

VM = VmRef(name="bench-warm-vm", zone="local-a")  # not in the local cloud's pool


class _TimedBlobs:
    """The GCS adapter, with every done-flag write timed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.done: list[tuple[str, float, float]] = []  # job id, write ms, end (perf_counter)

    def write(self, bucket: str, name: str, data: bytes, *args: Any, **kw: Any) -> int:
        began = time.perf_counter()
        generation = self.inner.write(bucket, name, data, *args, **kw)
        if name.endswith("/done.json"):
            end = time.perf_counter()
            self.done.append((name.split("/")[1], (end - began) * 1000, end))
        return generation

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _cloud(state: Path) -> tuple[Any, SimpleNamespace]:
    from google.cloud import firestore, storage

    from comfyburst.adapters.firestore_store import FirestoreJobStore
    from comfyburst.adapters.gcs import GcsBlobStore
    from localcloud.cloud import LocalCloud
    from localcloud.config import LocalCloudConfig

    # No reaper runs during the bench: it would dispatch the queued jobs onto pool VMs.
    local = LocalCloud(LocalCloudConfig.ephemeral(state, pool_size=1, reaper_period_s=3600.0))
    local.start()
    env = dict(local.env)
    os.environ.update(env)
    names = SimpleNamespace(
        jobs_collection="jobs", vms_collection="vms", idempotency_collection="idempotency"
    )
    project = env["COMFYBURST_PROJECT_ID"]
    store = FirestoreJobStore(firestore.Client(project=project), names)
    blobs = GcsBlobStore(storage.Client(project=project))
    buckets = {
        role: env[f"COMFYBURST_{role.upper()}_BUCKET"]
        for role in ("jobs", "outputs", "signals", "models")
    }
    return local, SimpleNamespace(store=store, blobs=blobs, buckets=buckets)


def _p(values: list[float]) -> tuple[float, float]:
    return round(statistics.median(values), 2), round(_pct(values, 0.95), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    from localcloud.comfyui_standin import StandinServer

    work = Path(tempfile.mkdtemp(prefix="bench-worker-overhead-"))
    local, cloud = _cloud(work / "cloud")
    standin = StandinServer(work / "in", work / "out", work / "tmp")
    url = standin.start()
    try:
        config = local_config(
            jobs_bucket=cloud.buckets["jobs"],
            outputs_bucket=cloud.buckets["outputs"],
            signals_bucket=cloud.buckets["signals"],
            models_bucket=cloud.buckets["models"],
            heartbeat_interval_s=5.0,
            drain_grace_s=0.5,
        )
        # Production throttles (progress at most once a second, cancel watch every second).
        settings = local_settings(
            url, work / "models", progress_min_interval_s=1.0, job_poll_interval_s=1.0
        )
        blobs = _TimedBlobs(cloud.blobs)
        jobs = [
            put_job(
                cloud.store,
                cloud.blobs,
                config,
                make_request(invert_workflow(f"bench/{i}")),
                VM if i == 0 else None,
            )
            for i in range(args.jobs + 1)
        ]
        agent = make_agent(settings, config, cloud.store, blobs, VM)  # type: ignore[arg-type]
        began = time.perf_counter()
        agent.run(jobs[0].job_id)
        run_s = time.perf_counter() - began
        manifests = {
            job_id: DoneManifest.model_validate_json(
                cloud.blobs.read(config.signals_bucket, f"jobs/{job_id}/done.json") or b""
            )
            for job_id, _, _ in blobs.done
        }
        bare = Bare(url)
        bare_over = []
        for _ in range(args.jobs):
            t0 = time.perf_counter()
            entry, _files = bare.run(_workflow("bench/bare"))
            bare_over.append((time.perf_counter() - t0) * 1000 - _exec_ms(entry))
        bare.close()
    finally:
        standin.stop()
        local.stop()

    assert len(blobs.done) == args.jobs + 1, f"{len(blobs.done)} done flags"
    assert all(m.status.value == "succeeded" for m in manifests.values())
    over, interval, claim, upload, queue, done_w, execs = [], [], [], [], [], [], []
    # Job 0 includes the agent's start (ComfyUI readiness, first socket): warm VM = jobs 1..N.
    for (_, _, prev_end), (job_id, write_ms, end) in zip(blobs.done, blobs.done[1:], strict=False):
        t = manifests[job_id].timings
        cycle = (end - prev_end) * 1000
        interval.append(cycle)
        execs.append(t.execution_s * 1000)
        over.append(cycle - t.execution_s * 1000)
        # The next job's claim is made while this one's done flag waits: it is in the cycle.
        claim.append(t.claim_s * 1000)
        upload.append(t.upload_s * 1000)
        queue.append(t.queue_wait_s * 1000)
        done_w.append(write_ms)
    rest = [
        o - c - u - q - d for o, c, u, q, d in zip(over, claim, upload, queue, done_w, strict=True)
    ]
    rows = []
    for phase, values in (
        ("agent overhead (cycle - execution)", over),
        ("  claim (next job, Firestore txn + lease)", claim),
        ("  upload outputs (GCS)", upload),
        ("  done.json write (GCS, ifGenerationMatch=0)", done_w),
        ("  queue wait in ComfyUI (post -> execution_start)", queue),
        ("  rest (request read, prompt, ws, history, view, progress)", rest),
        ("ComfyUI execution", execs),
        ("cycle (done flag to done flag)", interval),
        ("baseline: bare client overhead (same stand-in)", bare_over),
    ):
        p50, p95 = _p(values)
        rows.append({"phase": phase, "p50_ms": p50, "p95_ms": p95})
    over_p50, over_p95 = _p(over)
    meta = {
        "jobs": args.jobs,
        "backends": "Firestore emulator + fake-gcs-server (local cloud), ComfyUI stand-in",
        "agent_run_s": round(run_s, 2),
        "overhead_p50_ms": over_p50,
        "overhead_p95_ms": over_p95,
        "target_overhead_p50_ms": 100,
        "pass": over_p50 <= 100,
    }
    write_report("worker_overhead", rows, meta)


if __name__ == "__main__":
    main()
