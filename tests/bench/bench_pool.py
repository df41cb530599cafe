"""Benchmark the VM pool: N short jobs on 8 VMs of the local cloud (no faults).

Run: `.venv/bin/python -m tests.bench.bench_pool [--jobs 500] [--vms 8] [--work-s 2.0]`.
Each job runs one slow stand-in node of `--work-s` seconds. Reports the makespan (first
submit to last terminal job) against the ideal Σwork / VMs (target: at most 1.1 times) and
checks that no VM ever ran two jobs at once: per VM, the busy intervals [started_at,
started_at + fetch + queue + execution + upload] of its jobs must not overlap. Also reports
where the time went (tests/bench/_pool_phases.py: per-job phases, VM boots, guest boot time,
agent tracebacks, reaper actions and their reasons). Prints a table, writes `.bench/pool.json`.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from localcloud.scenarios.chaos import TERMINAL, workflow
from localcloud.scenarios.harness import Observer, cloud_config, running_cloud
from tests.bench._pool_phases import job_phases, log_findings

TARGET_RATIO = 1.1
OVERLAP_TOLERANCE_S = 0.05


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


def busy_intervals(jobs: dict[str, dict[str, Any]]) -> dict[str, list[tuple[float, float, str]]]:
    """Per VM, (start, end, job id) of each job's time on it, sorted."""
    per_vm: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for job_id, doc in jobs.items():
        timings, vm = doc.get("worker_timings") or {}, doc.get("vm") or {}
        if not doc.get("started_at") or not vm.get("name") or not timings:
            continue
        start = _ts(doc["started_at"])
        busy = sum(float(timings.get(k) or 0.0) for k in ("model_fetch_s", "queue_wait_s",
                                                          "execution_s", "upload_s"))  # fmt: skip
        per_vm[vm["name"]].append((start, start + busy, job_id))
    return {vm: sorted(spans) for vm, spans in per_vm.items()}


def overlaps(per_vm: dict[str, list[tuple[float, float, str]]]) -> list[tuple[str, str, str]]:
    """(vm, job a, job b) for every pair of consecutive jobs that overlap on one VM."""
    found = []
    for vm, spans in per_vm.items():
        for (_, end_a, job_a), (start_b, _, job_b) in itertools.pairwise(spans):
            if start_b < end_a - OVERLAP_TOLERANCE_S:
                found.append((vm, job_a, job_b))
    return found


def run(jobs: int, vms: int, work_s: float, seed: int) -> tuple[list[dict[str, Any]], dict]:
    from comfyburst.client import ApiClient, ClientSettings

    rng = random.Random(seed)
    state_dir = Path(tempfile.mkdtemp(prefix="comfyburst-pool-"))
    config = cloud_config(state_dir, pool_size=vms)
    faults = {"slow_node_class": "ImageBlur", "slow_node_s": work_s, "sampler_steps": 4}
    with running_cloud(config, standin_faults=faults) as cloud:
        observer = Observer(cloud.env)
        client = ApiClient(ClientSettings(api_url=cloud.env["COMFYBURST_API_URL"], auth="none"))
        billed_before = observer.billed_seconds()
        requests_ = [{"workflow": workflow(rng, slow=True)} for _ in range(jobs)]
        began = time.time()
        with ThreadPoolExecutor(4) as pool:
            ids = [job["job_id"] for job in pool.map(client.submit, requests_)]
        submitted = time.time()
        while True:
            docs = observer.jobs()
            if all(docs.get(j, {}).get("state") in TERMINAL for j in ids):
                break
            time.sleep(0.5)
        ended = max(_ts(docs[j]["finished_at"]) for j in ids)
        up = observer.wait_all_terminated(timeout_s=60)
        billed = sum(observer.billed_seconds().values()) - sum(billed_before.values())
        observer.close()
    work = sum(float((docs[j].get("worker_timings") or {}).get("execution_s") or 0) for j in ids)
    makespan = ended - began
    ideal = work / vms
    per_vm = busy_intervals({j: docs[j] for j in ids})
    clashes = overlaps(per_vm)
    ratio = makespan / ideal if ideal else float("inf")
    rows = [
        {"metric": "makespan / ideal", "value": round(ratio, 3), "target": f"≤ {TARGET_RATIO}",
         "ok": ratio <= TARGET_RATIO},
        {"metric": "two jobs on one VM at once", "value": len(clashes), "target": "0",
         "ok": not clashes},
    ]  # fmt: skip
    meta = {
        "jobs": jobs,
        "vms": vms,
        "work_s_per_job": work_s,
        "makespan_s": round(makespan, 1),
        "ideal_s": round(ideal, 1),
        "sum_work_s": round(work, 1),
        "submit_s": round(submitted - began, 1),
        "gpu_s_billed": round(billed, 1),
        "states": dict(Counter(docs[j]["state"] for j in ids)),
        "jobs_per_vm": {vm: len(spans) for vm, spans in sorted(per_vm.items())},
        "overlaps": clashes[:10],
        "vms_up_at_end": up,
        "phases_s": job_phases({j: docs[j] for j in ids}, per_vm),
        **log_findings(state_dir),
        "state_dir": str(state_dir),
    }
    return rows, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--work-s", type=float, default=2.0, help="seconds of work per job")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    from tests.bench._report import write_report

    rows, meta = run(args.jobs, args.vms, args.work_s, args.seed)
    write_report("pool", rows, meta)
    return 0  # the verdict against each target is in the table and the JSON, as for the others


if __name__ == "__main__":
    sys.exit(main())
