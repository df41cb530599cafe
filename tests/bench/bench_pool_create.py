"""Benchmark placing a job on a pool of templates: create vs reuse, calls and latency.

Run: `.venv/bin/python -m tests.bench.bench_pool_create [--vms 16] [--levels 1,16]`.
Starts the local cloud's emulators (no functions, no Compute of its own) and a Compute stand-in
in-process with one instance template and zones in two regions (us-central1-a and -b, each
full after half of `--vms` VMs, and europe-west4-a), then places jobs with the real dispatcher
(`Dispatcher.place_new`, the submit path) on the real adapters:

1. create: an empty pool; every job creates a VM from the template (lease document, then
   instances.insert with the job's metadata, waiting for the insert's capacity check);
2. reuse: every VM stopped and released; every job starts a stopped one (one read, one commit
   of lease and job, start; setMetadata only where the VM's deployment config is stale);
3. stockout: us-central1-a is full; every create meets ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS
   first and follows its `zonesAvailable`.

For each it reports the calls per placement by port method (each a network round trip; the
lease write and the VM read of a reuse run side by side) and p50/p99 latency. The stand-in's
boot delay is 0.05 s: nothing here waits for a boot. The floor is one Firestore commit plus
one Compute call from this process, measured the same way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.bench.bench_dispatch import _pct

ZONES = ["us-central1-a", "us-central1-b", "europe-west4-a"]
TEMPLATE = {
    "name": "gpu-l4",
    "properties": {
        "machineType": "g2-standard-8",
        "guestAccelerators": [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}],
        "labels": {"comfyburst-pool": "bench"},
    },
}


class _Counted:
    """Forwards calls to `inner`, counting them per method in the calling thread's tally."""

    def __init__(self, inner: Any, group: str, tally: threading.local) -> None:
        self._inner, self._group, self._tally = inner, group, tally

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls = getattr(self._tally, "calls", None)
            if calls is not None:
                calls[f"{self._group}.{name}"] += 1
            return attr(*args, **kwargs)

        return counted


def _jobs(store: Any, count: int) -> list[Any]:
    from comfyburst.domain.jobs import new_job
    from comfyburst.schema import JobRequest
    from tests._api_support import WORKFLOW

    request = JobRequest.model_validate({"workflow": WORKFLOW, "models": []})
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return [
        new_job(
            job_id=f"bench-{uuid.uuid4().hex[:10]}",
            request=request,
            workflow_bytes=100,
            now=now,
            max_attempts=3,
            ttl_days=1,
        )
        for _ in range(count)
    ]


def _place_all(dispatcher: Any, jobs: list[Any], clients: int, tally: threading.local) -> dict:
    latencies: list[float] = []
    calls: dict[str, list[int]] = defaultdict(list)
    outcomes: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def one(job: Any) -> None:
        tally.calls = defaultdict(int)
        began = time.perf_counter()
        placement = dispatcher.place_new(job)
        elapsed = (time.perf_counter() - began) * 1000
        with lock:
            latencies.append(elapsed)
            for key, value in tally.calls.items():
                calls[key].append(value)
            last = placement.tried[-1][1] if placement.tried else (placement.reason or "none")
            outcomes[last] += 1
        tally.calls = None

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, jobs))
    n = len(jobs)
    per_call = {k: round(sum(v) / n, 2) for k, v in sorted(calls.items())}
    return {
        "placements": n,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "calls_per_placement": round(sum(sum(v) for v in calls.values()) / n, 2),
        "calls_by_method": per_call,
        "outcomes": dict(outcomes),
    }


def _release_all(standin: Any, store: Any, fleet: Any) -> None:
    for vm in standin.instances():
        if vm["status"] != "TERMINATED":
            fleet.stop(vm["zone"], vm["name"], str(uuid.uuid4()))
    deadline = time.monotonic() + 60
    while any(v["status"] != "TERMINATED" for v in standin.instances()):
        if time.monotonic() > deadline:
            raise RuntimeError("VMs did not stop")
        time.sleep(0.05)
    for record in store.list_vms():
        current, version = store.get_vm(record.name)
        if current is not None and current.lease is not None:
            store.put_vm(current.model_copy(update={"lease": None}), version)


def _floor(store: Any, fleet: Any, zone: str, name: str, samples: int) -> dict[str, Any]:
    """One Firestore commit plus one Compute call, back to back, from this process."""
    from comfyburst.schema import VmRecord

    latencies = []
    for index in range(samples):
        began = time.perf_counter()
        store.put_vm(VmRecord(name=f"floor-{uuid.uuid4().hex[:8]}-{index}", zone=zone), None)
        fleet.get(zone, name)
        latencies.append((time.perf_counter() - began) * 1000)
    return {"p50_ms": _pct(latencies, 50), "p99_ms": _pct(latencies, 99)}


def run(vms: int, levels: list[int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from comfyburst import wiring
    from comfyburst.services.dispatch import Dispatcher
    from comfyburst.settings import FunctionSettings
    from localcloud.cloud import LocalCloud
    from localcloud.compute import ComputeStandin, ComputeStandinConfig
    from localcloud.config import LocalCloudConfig
    from localcloud.wipe import wipe_all

    state_dir = Path(tempfile.mkdtemp(prefix="bench-pool-create-"))
    cloud_config = LocalCloudConfig.ephemeral(
        state_dir, start_functions=False, start_compute=False, reaper_period_s=3600.0
    )
    rows: list[dict[str, Any]] = []
    half = max(1, vms // 2)
    with LocalCloud(cloud_config) as cloud:
        os.environ.update(cloud.env)
        base = FunctionSettings()
        for clients in levels:
            for scenario in ("create", "reuse", "stockout"):
                wipe_all(dict(cloud.env))
                capacity = {ZONES[0]: half, ZONES[1]: half, ZONES[2]: vms}
                if scenario == "stockout":
                    capacity[ZONES[0]] = 0
                compute = ComputeStandinConfig(
                    project=base.project_id,
                    zones=ZONES,
                    templates=[TEMPLATE],
                    zone_capacity_vms=capacity,
                    staging_s=0.05,
                    stopping_s=0.05,
                    guest=None,
                    log_dir=state_dir / "compute-logs",
                )
                with ComputeStandin(compute) as standin:
                    settings = base.model_copy(
                        update={
                            "compute_endpoint": standin.base_url,
                            "pool_zones": ZONES,
                            "pool_label": "comfyburst-pool=bench",
                            "pool_template": "global/instanceTemplates/gpu-l4",
                            "pool_max_vms": vms,
                            "pool_max_vms_per_zone": vms,
                        }
                    )
                    tally = threading.local()
                    tally.calls = None
                    store, fleet = wiring.job_store(settings), wiring.fleet(settings)
                    dispatcher = Dispatcher(
                        _Counted(store, "firestore", tally),
                        _Counted(fleet, "compute", tally),
                        wiring.clock(),
                        settings,
                    )
                    if scenario == "reuse":
                        _place_all(dispatcher, _jobs(store, vms), clients, tally)
                        _release_all(standin, store, fleet)
                        time.sleep(5.1)  # past the pool view's cache age: it sees them stopped
                    result = _place_all(dispatcher, _jobs(store, vms), clients, tally)
                    row = {"scenario": scenario, "clients": clients, **result}
                    if scenario == "create" and clients == levels[0]:
                        first = standin.instances()[0]
                        floor = _floor(store, fleet, first["zone"], first["name"], 20)
                        rows.append({"scenario": "floor", "clients": 1, **floor})
                    rows.append(row)
                    print(row, flush=True)
    meta = {
        "vms": vms,
        "zones": ZONES,
        "zone_capacity_vms": f"{half} in each us-central1 zone, {vms} in europe-west4-a",
        "standin_boot_s": 0.05,
        "round_trips": "compute.set_metadata is 2 HTTP calls (a GET for the fingerprint, then "
        "setMetadata); compute.create is instances.insert plus one operations.wait (bounded "
        "by create_wait_s); every other port call is one",
        "cpus": os.cpu_count(),
        # A shared 2-CPU machine: other sessions' load inflates every number here.
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
    }
    return rows, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=16, help="placements per scenario")
    parser.add_argument("--levels", default="1,16", help="concurrent placements per level")
    args = parser.parse_args(argv)
    rows, meta = run(args.vms, [int(x) for x in args.levels.split(",")])
    from tests.bench._report import write_report

    write_report("pool_create", rows, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
