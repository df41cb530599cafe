"""Completion latency on the local cloud: `done.json` written -> result on a subscription.

The path measured is the product's: fake-gcs-server's notification -> the Eventarc stand-in ->
`on_done_flag` (Firestore transaction, signing, publish, lease release) -> Pub/Sub -> a
streaming-pull consumer (`comfyburst_cli.watch`). Baselines in the same run and on the same
emulators: a bare publish -> streaming-pull round trip, and a bare object write -> storage
notification (the floor of the storage hop that the Eventarc stand-in adds to).

Run: `.venv/bin/python -m tests.bench.bench_completion [--jobs N]`
(COMFYBURST_LOCALCLOUD_ENV=.localcloud/env reuses a running `make up` cloud).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench._report import write_report

TARGET_P50_MS = 100.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _row(stage: str, seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "stage": stage,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(_pct(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
    }


class Arrivals:
    """Arrival times by key, with a wait for one key."""

    def __init__(self) -> None:
        self._times: dict[str, float] = {}
        self._cond = threading.Condition()

    def add(self, key: str, at: float) -> None:
        with self._cond:
            self._times.setdefault(key, at)
            self._cond.notify_all()

    def wait(self, key: str, timeout_s: float) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: key in self._times, timeout_s):
                raise TimeoutError(f"no arrival for {key} within {timeout_s} s")
            return self._times[key]


def _start_cloud(state_dir: Path) -> tuple[Any, dict[str, str]]:
    reuse = os.environ.get("COMFYBURST_LOCALCLOUD_ENV")
    if reuse:
        from localcloud.cloud import read_env_file

        return None, read_env_file(Path(reuse))
    from localcloud.cloud import LocalCloud
    from localcloud.config import LocalCloudConfig

    # No guest in the VMs: this measures the functions, not a worker.
    cloud = LocalCloud(LocalCloudConfig.ephemeral(state_dir, guest_argv=None))
    cloud.start()
    return cloud, dict(cloud.env)


def _warm_trigger(env: dict[str, str]) -> None:
    """One ignored event, so the measured events find a warm function instance."""
    import requests

    bucket = env["COMFYBURST_SIGNALS_BUCKET"]
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "warm-up",
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-subject": "objects/warm-up",
        "Content-Type": "application/json",
    }
    body = {"bucket": bucket, "name": "warm-up", "generation": "1"}
    response = requests.post(
        env["COMFYBURST_ON_DONE_FLAG_URL"], json=body, headers=headers, timeout=120
    )
    response.raise_for_status()


def _measure(n: int, act: Callable[[int], str], arrivals: Arrivals) -> list[float]:
    """Run `act(i)` (which returns the key it will cause to arrive) and time each arrival."""
    samples = []
    for i in range(n):
        start = time.monotonic()
        key = act(i)
        samples.append(arrivals.wait(key, 30.0) - start)
    return samples


def run(jobs: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="bench-completion-") as tmp:
        cloud, env = _start_cloud(Path(tmp))
        os.environ.update(env)
        try:
            return _bench(jobs, env)
        finally:
            if cloud is not None:
                cloud.stop()


def _bench(jobs: int, env: dict[str, str]) -> Path:
    from google.cloud import pubsub_v1

    from comfyburst import wiring
    from comfyburst.adapters.clock import SystemClock
    from comfyburst.schema import ResultMessage
    from comfyburst.settings import FunctionSettings
    from comfyburst.states import JobState
    from comfyburst_cli.watch import watch
    from tests._completion_helpers import lease_record, make_job, manifest

    settings = FunctionSettings()
    store, blobs, publisher = (
        wiring.job_store(settings),
        wiring.blob_store(settings),
        wiring.publisher(settings),
    )
    subscriber = pubsub_v1.SubscriberClient()
    project = settings.project_id
    results_sub = subscriber.subscription_path(project, f"bench-results-{uuid.uuid4().hex[:8]}")
    gcs_sub = subscriber.subscription_path(project, f"bench-gcs-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(
        request={
            "name": results_sub,
            "topic": f"projects/{project}/topics/{settings.results_topic}",
        }
    )
    gcs_topic = env.get("COMFYBURST_LOCAL_GCS_TOPIC", "comfyburst-gcs-notifications")
    subscriber.create_subscription(
        request={"name": gcs_sub, "topic": f"projects/{project}/topics/{gcs_topic}"}
    )
    _warm_trigger(env)

    results, notifications = Arrivals(), Arrivals()
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch,
        args=(results_sub,),
        kwargs={
            "timeout_s": None,
            "emit": lambda _line: None,
            "subscriber": subscriber,
            "on_result": lambda m, at: results.add(m.job_id, at),
            "max_messages": None,
        },
        daemon=True,
    )
    watcher.start()

    def on_gcs(message: Any) -> None:
        notifications.add(message.attributes.get("objectId", ""), time.monotonic())
        message.ack()

    gcs_stream = subscriber.subscribe(gcs_sub, callback=on_gcs)
    run_id = uuid.uuid4().hex[:6]

    def bare_publish(i: int) -> str:
        job_id = f"bare-{run_id}-{i}"
        message = ResultMessage(job_id=job_id, status=JobState.SUCCEEDED, attempt=1)
        publisher.publish(message.model_dump_json().encode(), message.attributes())
        return job_id

    def bare_notification(i: int) -> str:
        name = f"bench/{run_id}/{i}.json"
        blobs.write(settings.jobs_bucket, name, b"{}", "application/json")
        return name

    prepared: dict[int, tuple[str, bytes]] = {}

    def prepare(i: int) -> None:
        job_id, vm = f"bench-{run_id}-{i}", f"bench-vm-{run_id}-{i}"  # outside the pool
        now = SystemClock().now()
        store.create_job(make_job(job_id, now, JobState.RUNNING, vm=vm))
        store.put_vm(lease_record(vm, job_id, now), None)
        blobs.write(settings.outputs_bucket, f"jobs/{job_id}/outputs/out.png", b"png", "image/png")
        body = manifest(job_id, now, vm=vm, outputs=[("out.png", b"png")])
        prepared[i] = (job_id, body.model_dump_json().encode())

    def done_flag(i: int) -> str:
        job_id, body = prepared[i]
        blobs.write(settings.signals_bucket, f"jobs/{job_id}/done.json", body, "application/json")
        return job_id

    for i in range(jobs):
        prepare(i)
    # Warm every path once before measuring.
    _measure(3, lambda i: bare_publish(10_000 + i), results)
    _measure(3, lambda i: bare_notification(10_000 + i), notifications)
    baseline_publish = _measure(jobs, bare_publish, results)
    baseline_storage = _measure(jobs, bare_notification, notifications)
    completion = _measure(jobs, done_flag, results)

    stop.set()
    gcs_stream.cancel()
    for sub in (results_sub, gcs_sub):
        subscriber.delete_subscription(request={"subscription": sub})

    rows = [
        _row("baseline: publish -> streaming pull", baseline_publish),
        _row("baseline: object write -> storage notification", baseline_storage),
        _row("done.json written -> result received", completion),
    ]
    p50 = rows[-1]["p50_ms"]
    overhead = round(p50 - rows[0]["p50_ms"] - rows[1]["p50_ms"], 1)
    meta = {
        "jobs": jobs,
        "target_p50_ms": TARGET_P50_MS,
        "meets_target": p50 <= TARGET_P50_MS,
        "function_overhead_p50_ms": overhead,
        "path": "fake-gcs -> Pub/Sub -> Eventarc stand-in -> on_done_flag -> Pub/Sub -> watch",
    }
    return write_report("completion", rows, meta)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_completion")
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args(argv)
    run(args.jobs)


if __name__ == "__main__":
    main()
