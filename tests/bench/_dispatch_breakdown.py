"""The dispatch benchmark's in-process breakdown: where a submit's time goes, by port call."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return round(ordered[index], 1)


def submit_deps_for(settings: Any, wrap: Callable[[Any, str], Any] = lambda i, _g: i) -> Any:
    """Submit's dependencies on the real adapters, each port passed through `wrap`."""
    from comfyburst import wiring
    from comfyburst.api import build_api_deps

    storage = wiring.storage_client(settings)
    return build_api_deps(
        settings,
        store=wrap(wiring.job_store(settings), "firestore"),
        blobs=wrap(wiring.blob_store(settings, storage), "gcs"),
        signer=wiring.url_signer(settings, storage),
        publisher=wiring.publisher(settings),
        fleet=wrap(wiring.fleet(settings), "compute"),
        clock=wiring.clock(),
    ).submit_deps()


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


def bench_breakdown(
    env: dict[str, str],
    levels: list[int],
    rounds: int,
    body: bytes,
    pool_size: int,
    wipe: Callable[[dict[str, str]], None],
) -> list[dict[str, Any]]:
    """Submits in-process, `pool_size` per round, each port call timed per submit."""
    from comfyburst.services.submit import submit_job
    from comfyburst.settings import FunctionSettings

    os.environ.update(env)
    settings = FunctionSettings()
    sink = _Sink()
    submit_deps = submit_deps_for(settings, lambda inner, group: _Timed(inner, group, sink))
    submit_job(submit_deps, body, idempotency_key=None, caller=None)  # warm up
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
            result = submit_job(submit_deps, body, idempotency_key=None, caller=None)
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
            wipe(env)
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(one, range(pool_size)))
        row: dict[str, Any] = {
            "mode": "in-process",
            "clients": clients,
            "requests": len(totals),
            "p50_ms": pct(totals, 50),
            "p95_ms": pct(totals, 95),
            "p99_ms": pct(totals, 99),
            "mean_ms": round(statistics.fmean(totals), 1),
            "mean_ms_by_call": {
                key: round(sum(values) / len(totals), 2)
                for key, values in sorted(parts.items(), key=lambda kv: -sum(kv[1]))
            },
        }
        rows.append(row)
        print(row, flush=True)
    return rows
