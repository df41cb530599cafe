"""Benchmark submit -> start requested (POST /jobs answering `starting`) on a local cloud.

Run: `.venv/bin/python -m tests.bench.bench_dispatch [--rounds N] [--levels 1,16,64]`.
Starts its own local cloud (ephemeral ports, a pool of 64 VMs whose guests run nothing, no
reaper in the way), then:

1. HTTP: N concurrent clients POST /jobs to the local API process (functions-framework under
   gunicorn, as `make up` serves it). Each round submits as many jobs as there are VMs, so
   every submit takes the full path (checks, GCS, Firestore, lease, metadata, start); the
   cloud is wiped between rounds. Reports p50/p95/p99 per concurrency level.
2. Breakdown: the same submit use case in-process, with every port call timed, to show where
   the time goes (Firestore, GCS, Compute, and our own CPU: parsing, checks, pre-flight).

Target: p50 <= 50 ms and p99 <= 250 ms at 64 clients. Prints a table; writes
`.bench/dispatch.json` (via tests/bench/_report.py when present).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
POOL_SIZE = 64
WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}
BODY = json.dumps({"workflow": WORKFLOW}).encode()
TARGET_P50_MS, TARGET_P99_MS = 50.0, 250.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return round(ordered[index], 1)


# --- 1. HTTP against the local API process ---------------------------------------------------


def _http_round(url: str, clients: int, per_client: int) -> tuple[list[float], dict[str, int]]:
    latencies: list[float] = []
    states: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    sessions = [requests.Session() for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        session = sessions[index]
        barrier.wait()
        for _ in range(per_client):
            began = time.perf_counter()
            response = session.post(
                f"{url}/jobs", data=BODY, headers={"Content-Type": "application/json"}, timeout=60
            )
            elapsed = (time.perf_counter() - began) * 1000
            state = response.json().get("state", str(response.status_code))
            with lock:
                latencies.append(elapsed)
                states[state] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    for session in sessions:
        session.close()
    return latencies, dict(states)


def bench_http(env: dict[str, str], levels: list[int], rounds: int) -> list[dict[str, Any]]:
    from localcloud.wipe import wipe_all

    url = env["COMFYBURST_API_URL"]
    # Warm the API process (first request builds its clients and loads the catalogue).
    requests.post(
        f"{url}/jobs", data=BODY, headers={"Content-Type": "application/json"}, timeout=120
    )
    rows = []
    for clients in levels:
        latencies: list[float] = []
        states: dict[str, int] = defaultdict(int)
        for _ in range(rounds):
            wipe_all(env)
            got, seen = _http_round(url, clients, POOL_SIZE // clients)
            latencies += got
            for key, count in seen.items():
                states[key] += count
        rows.append(
            {
                "mode": "http",
                "clients": clients,
                "requests": len(latencies),
                "p50_ms": _pct(latencies, 50),
                "p95_ms": _pct(latencies, 95),
                "p99_ms": _pct(latencies, 99),
                "mean_ms": round(statistics.fmean(latencies), 1),
                "states": dict(states),
            }
        )
        print(rows[-1], flush=True)
    return rows


# --- 2. In-process breakdown ------------------------------------------------------------------


class _Sink(threading.local):
    def __init__(self) -> None:
        self.times: dict[str, float] = defaultdict(float)


class _Timed:
    """Forwards every call to `inner`, adding its duration to the calling thread's sink."""

    def __init__(self, inner: Any, group: str, sink: _Sink) -> None:
        self._inner, self._group, self._sink = inner, group, sink

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._sink.times[f"{self._group}.{name}"] += time.perf_counter() - began

        return timed


def bench_breakdown(env: dict[str, str], levels: list[int], rounds: int) -> list[dict[str, Any]]:
    from comfyburst import wiring
    from comfyburst.api import build_api_deps
    from comfyburst.services.submit import submit_job
    from comfyburst.settings import FunctionSettings
    from localcloud.wipe import wipe_all

    os.environ.update(env)
    settings = FunctionSettings()
    sink = _Sink()
    storage = wiring.storage_client(settings)
    deps = build_api_deps(
        settings,
        store=_Timed(wiring.job_store(settings), "firestore", sink),
        blobs=_Timed(wiring.blob_store(settings, storage), "gcs", sink),
        signer=wiring.url_signer(settings, storage),
        publisher=wiring.publisher(settings),
        fleet=_Timed(wiring.fleet(settings), "compute", sink),
        clock=wiring.clock(),
    )
    submit_deps = deps.submit_deps()
    submit_job(submit_deps, BODY, idempotency_key=None, caller=None)  # warm up
    rows = []
    for clients in levels:
        totals: list[float] = []
        parts: dict[str, list[float]] = defaultdict(list)
        lock = threading.Lock()

        def one(
            _: int,
            totals: list[float] = totals,
            parts: dict[str, list[float]] = parts,
            lock: threading.Lock = lock,
        ) -> None:
            sink.times = defaultdict(float)
            began = time.perf_counter()
            result = submit_job(submit_deps, BODY, idempotency_key=None, caller=None)
            total = (time.perf_counter() - began) * 1000
            assert result.job.state.value == "starting", result.job.queued_reason
            with lock:
                totals.append(total)
                spent = 0.0
                for key, seconds in sink.times.items():
                    parts[key].append(seconds * 1000)
                    spent += seconds * 1000
                parts["cpu (parse, checks, pre-flight, models)"].append(total - spent)

        for _ in range(rounds):
            wipe_all(env)
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(one, range(POOL_SIZE)))
        row: dict[str, Any] = {
            "mode": "in-process",
            "clients": clients,
            "requests": len(totals),
            "p50_ms": _pct(totals, 50),
            "p95_ms": _pct(totals, 95),
            "p99_ms": _pct(totals, 99),
            "mean_ms": round(statistics.fmean(totals), 1),
            "mean_ms_by_call": {
                key: round(sum(values) / len(totals), 2)
                for key, values in sorted(parts.items(), key=lambda kv: -sum(kv[1]))
            },
        }
        rows.append(row)
        print(row, flush=True)
    return rows


# --- report -------------------------------------------------------------------------------------


def _write_report(name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    try:  # the shared helper, when the lead has added it
        from tests.bench._report import write_report
    except ImportError:
        pass
    else:
        path: Path = write_report(name, rows, meta)
        return path
    columns = ["mode", "clients", "requests", "p50_ms", "p95_ms", "p99_ms", "mean_ms"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        if "mean_ms_by_call" in row:
            print(f"in-process, {row['clients']} clients, mean ms per submit by call:")
            for key, value in row["mean_ms_by_call"].items():
                print(f"  {key:45s} {value:8.2f}")
    for key, value in meta.items():
        print(f"{key}: {value}")
    out = ROOT / ".bench" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"name": name, "meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 64 submits per level")
    parser.add_argument("--levels", default="1,16,64", help="concurrent clients per level")
    parser.add_argument("--skip-breakdown", action="store_true")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    for level in levels:
        if POOL_SIZE % level:
            parser.error(f"each level must divide the pool size {POOL_SIZE}")

    from localcloud.cloud import LocalCloud
    from localcloud.config import LocalCloudConfig

    state_dir = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    config = LocalCloudConfig.ephemeral(
        state_dir,
        pool_size=POOL_SIZE,
        guest_argv=None,  # VMs reach RUNNING and run nothing: we measure the API only
        reaper_period_s=3600.0,
        compute_staging_s=0.05,
        compute_stopping_s=0.05,
    )
    load_at_start = round(os.getloadavg()[0], 1)
    began = time.monotonic()
    with LocalCloud(config) as cloud:
        startup_s = time.monotonic() - began
        env = dict(cloud.env)
        rows = bench_http(env, levels, args.rounds)
        if not args.skip_breakdown:
            rows += bench_breakdown(env, [lv for lv in levels if lv <= 16], args.rounds)
    http64 = next((r for r in rows if r["mode"] == "http" and r["clients"] == 64), None)
    meta = {
        "target": f"p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms at 64 clients",
        "met": bool(http64)
        and http64["p50_ms"] <= TARGET_P50_MS
        and http64["p99_ms"] <= TARGET_P99_MS,
        "pool_size": POOL_SIZE,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "localcloud_startup_s": round(startup_s, 1),
        # A shared 2-CPU machine: other sessions' load inflates every number here.
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
        "load_average_1m_at_start": load_at_start,
    }
    _write_report("dispatch", rows, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
