"""Waiting for a job on the local cloud: a state change -> the waiting client's answer.

Measured through the product's path: the API function (functions-framework process) holding
`GET /jobs/{id}?wait_s=30` on a Firestore listen stream, the change written to the job
document by another client. Baseline in the same run: the client the API had before, polling
`GET /jobs/{id}` every second. Also: several waiters at once on one API process, and the API
calls (and so document reads) each way costs per job.

Run: `.venv/bin/python -m tests.bench.bench_wait [--trials N] [--waiters K]`
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.bench._report import write_report

TARGET_P95_MS = 1000.0  # "a waiting client sees a state change within ~1 s"
POLL_S = 1.0
CHANGE_AFTER_S = 0.5


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _row(how: str, seconds: list[float], calls: list[int]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "client": how,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(_pct(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
        "api_calls_per_change": round(statistics.mean(calls), 2),
    }


def _start_cloud(state_dir: Path) -> tuple[Any, dict[str, str]]:
    reuse = os.environ.get("COMFYBURST_LOCALCLOUD_ENV")
    if reuse:
        from localcloud.cloud import read_env_file

        return None, read_env_file(Path(reuse))
    from localcloud.cloud import LocalCloud
    from localcloud.config import LocalCloudConfig

    cloud = LocalCloud(LocalCloudConfig.ephemeral(state_dir, guest_argv=None))
    cloud.start()
    return cloud, dict(cloud.env)


class Bench:
    def __init__(self, env: dict[str, str]) -> None:
        from comfyburst import wiring
        from comfyburst.client import ApiClient, ClientSettings
        from comfyburst.settings import FunctionSettings

        self.store = wiring.job_store(FunctionSettings())
        self.client = ApiClient(
            ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="none", timeout_s=30)
        )

    def new_job(self) -> str:
        from comfyburst.schema import Job, RequestSummary
        from comfyburst.states import JobState

        now = datetime.now(UTC)
        job = Job(
            job_id=f"bench-wait-{uuid.uuid4().hex[:12]}",
            state=JobState.RUNNING,
            request=RequestSummary(
                node_count=1, class_types=[], models=[], input_names=[], workflow_bytes=1
            ),
            created_at=now,
            deadline_at=now + timedelta(hours=1),
            state_changed_at=now,
        )
        self.store.create_job(job)
        return job.job_id

    def change(self, job_id: str) -> float:
        """Move the job's progress; the time the write returned."""
        self.store.patch_job(job_id, {"progress": {"node": "1", "value": 1, "max": 2}})
        return time.monotonic()

    def waiter(self, job_id: str) -> tuple[float, int]:
        """One long wait, as ApiClient.wait makes it: (answered at, calls)."""
        job = self.client.get(job_id, wait_s=30)
        assert job["progress"]["value"] == 1, job["progress"]
        return time.monotonic(), 1

    def poller(self, job_id: str) -> tuple[float, int]:
        """The client before waits: GET every POLL_S until the change shows."""
        calls = 0
        while True:
            calls += 1
            if self.client.get(job_id)["progress"]["value"] == 1:
                return time.monotonic(), calls
            time.sleep(POLL_S)

    def trial(self, watch: Any, jobs: int) -> tuple[list[float], list[int]]:
        """`jobs` clients watch one job each; all jobs change at once after CHANGE_AFTER_S."""
        ids = [self.new_job() for _ in range(jobs)]
        answers: dict[str, tuple[float, int]] = {}

        def run(job_id: str) -> None:
            answers[job_id] = watch(job_id)

        threads = [threading.Thread(target=run, args=(i,)) for i in ids]
        for thread in threads:
            thread.start()
        time.sleep(CHANGE_AFTER_S)
        changed = {job_id: self.change(job_id) for job_id in ids}
        for thread in threads:
            thread.join(60)
        latencies = [answers[i][0] - changed[i] for i in ids]
        return latencies, [answers[i][1] for i in ids]


def run(trials: int, waiters: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="bench-wait-") as tmp:
        cloud, env = _start_cloud(Path(tmp))
        os.environ.update(env)
        try:
            return _bench(Bench(env), trials, waiters)
        finally:
            if cloud is not None:
                cloud.stop()


def _bench(bench: Bench, trials: int, waiters: int) -> Path:
    bench.trial(bench.waiter, 1)  # warm the API process (clients, first listen)
    results: dict[str, tuple[list[float], list[int]]] = {}
    for name, watch, jobs in (
        ("wait_s, 1 waiter", bench.waiter, 1),
        (f"wait_s, {waiters} waiters at once", bench.waiter, waiters),
        (f"baseline: poll every {POLL_S:g} s", bench.poller, 1),
    ):
        latencies: list[float] = []
        calls: list[int] = []
        for _ in range(trials):
            got, made = bench.trial(watch, jobs)
            latencies += got
            calls += made
        results[name] = (latencies, calls)
    rows = [_row(name, lat, calls) for name, (lat, calls) in results.items()]
    waited = results["wait_s, 1 waiter"][0]
    p95_ms = _pct(waited, 0.95) * 1000
    meta = {
        "target": f"p95 of a waiter <= {TARGET_P95_MS:g} ms after the change",
        "met": p95_ms <= TARGET_P95_MS,
        "change_after_s": CHANGE_AFTER_S,
        "note": "latency counts from the write's return; a poller's calls grow with the wait, "
        "a waiter's stay at one per change",
    }
    return write_report("wait", rows, meta)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_wait")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--waiters", type=int, default=6)
    args = parser.parse_args(argv)
    run(args.trials, args.waiters)


if __name__ == "__main__":
    main()
