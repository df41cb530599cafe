"""`make chaos` / `python -m localcloud.scenarios.chaos`: many jobs on 8 local VMs under faults.

Submits N jobs through the API while injecting, at random with a fixed seed, the faults of
`_chaos_faults.KINDS` (killed workers, VMs stopped behind the system's back, boot failures,
stockouts, duplicate / rewritten / delayed done events, publish failures, cancels; a share of
the jobs runs a slow ComfyUI node). Then checks what must hold whatever crashes:

- jobs lost: not terminal by their deadline plus one reaper period (target 0);
- jobs completed twice: more than one terminal status published for a job (target 0);
- duplicate result messages with different content, per job_id + status (target 0);
- VMs still RUNNING at the end (target 0);
- a second tenant's attacks (`_chaos_tenants.py`): `cross_tenant_reads` and `models_changed`,
  measured (target 0 each);
- GPU-seconds billed (RUNNING time per VM, from the Compute stand-in) against work-seconds
  (ComfyUI execution time from the done manifests): (billed - work) / jobs ≤ 15 s.

Prints a table and writes `.bench/chaos.json`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from localcloud.config import REPO_ROOT
from localcloud.scenarios._chaos_faults import Injected, Injector
from localcloud.scenarios._chaos_tenants import (
    Tenants,
    model_server,
    models_changed,
    read_others,
    run_hostile,
)
from localcloud.scenarios.harness import Observer, cloud_config, disk_root, running_cloud, vm_names

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
OVERHEAD_TARGET_S = 15.0
console = Console()


@dataclass
class ChaosConfig:
    """How big the run is and how much goes wrong; fault counts scale with `jobs`."""

    jobs: int = 500
    vms: int = 8
    seed: int = 20261128
    slow_share: float = 0.1  # jobs with the slow ImageBlur node
    slow_node_s: float = 3.0
    cancel_share: float = 0.03
    fault_share: float = 0.02  # of each VM/event fault kind, per job
    job_timeout_s: int = 900
    reaper_period_s: float = 2.0
    submit_workers: int = 4
    state_dir: Path | None = None
    out: Path = REPO_ROOT / ".bench" / "chaos.json"

    def budget(self) -> dict[str, int]:
        """How many of each fault to inject."""
        each = max(1, round(self.jobs * self.fault_share))
        return {
            "kill_worker": each,
            "stop_vm": each,
            "boot_failure": each,
            "stockout": each,
            "duplicate_event": 2 * each,
            "rewrite_done": each,
            "delayed_event": each,
            "publish_failure": each,
            "cancel": max(1, round(self.jobs * self.cancel_share)),
        }


def workflow(rng: random.Random, slow: bool) -> dict[str, Any]:
    """EmptyImage → ImageInvert [→ ImageBlur, the slow node] → SaveImage, a random colour."""
    nodes: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": rng.randrange(1 << 24)},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    }
    last = "2"
    if slow:
        nodes["3"] = {
            "class_type": "ImageBlur",
            "inputs": {"image": ["2", 0], "blur_radius": 1, "sigma": 1.0},
        }
        last = "3"
    nodes["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [last, 0], "filename_prefix": "c"},
    }
    return nodes


@dataclass
class Run:
    """What happened during one chaos run."""

    submitted: dict[str, float] = field(default_factory=dict)  # job id -> submit time
    injected: list[Injected] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_of(api_url: str, key: str) -> Any:
    from comfyburst.client import ApiClient, ClientSettings

    return ApiClient(ClientSettings(api_url=api_url, auth="api_key", api_key=key, timeout_s=120))


def _submit_all(
    cfg: ChaosConfig, api_url: str, rng: random.Random, run: Run, tenants: Tenants
) -> None:
    requests_ = [
        {
            "workflow": workflow(rng, rng.random() < cfg.slow_share),
            "options": {"timeout_s": cfg.job_timeout_s},
            # Every fourth job brings tenant A's own model (checked untouched at the end).
            **({"models": [tenants.a_model()]} if index % 4 == 0 else {}),
        }
        for index in range(cfg.jobs)
    ]
    client = client_of(api_url, tenants.keys["a"])

    def submit(index: int) -> None:
        job = client.submit(requests_[index], idempotency_key=f"chaos-{cfg.seed}-{index}")
        with run.lock:
            run.submitted[job["job_id"]] = time.time()

    with ThreadPoolExecutor(cfg.submit_workers) as pool:
        list(pool.map(submit, range(cfg.jobs)))


def _states(observer: Observer) -> dict[str, dict[str, Any]]:
    return observer.jobs()


def _inject_loop(
    cfg: ChaosConfig, observer: Observer, injector: Injector, run: Run, stop: threading.Event
) -> None:
    """Inject the budgeted faults spread over the run, triggered by progress, not by time."""
    rng = injector.rng
    budget = cfg.budget()
    plan = [kind for kind, count in sorted(budget.items()) for _ in range(count)]
    rng.shuffle(plan)
    # Each fault fires once this many jobs are terminal (spread over the first 90 %).
    marks = sorted(rng.uniform(0.0, 0.9) * cfg.jobs for _ in plan)
    zones = sorted({vm["zone"] for vm in observer.instances()})
    names = vm_names_of(observer)
    pending = list(zip(marks, plan, strict=True))
    release_at = cfg.jobs * 0.95
    while not stop.wait(0.5) and (pending or injector.held):
        jobs = _states(observer)
        done = [j for j, d in jobs.items() if d.get("state") in TERMINAL]
        if injector.held and len(done) >= min(release_at, len(jobs)):
            run.injected += injector.release_held()
        while pending and pending[0][0] <= len(done):
            _, kind = pending.pop(0)
            running = [d for d in jobs.values() if d.get("state") == "running"]
            live = [j for j, d in jobs.items() if d.get("state") not in TERMINAL]
            event = _one(kind, injector, running, done, live, names, zones)
            if event is not None:
                run.injected.append(event)
            elif kind in ("kill_worker", "stop_vm", "cancel"):
                pending.append((len(done) + 1, kind))  # nothing to hit now; try a bit later
                pending.sort()
                break
    if stop.is_set() and injector.held:
        run.injected += injector.release_held()


def vm_names_of(observer: Observer) -> list[str]:
    return [vm["name"] for vm in observer.instances()]


def _one(
    kind: str,
    injector: Injector,
    running: list[dict[str, Any]],
    done: list[str],
    live: list[str],
    names: list[str],
    zones: list[str],
) -> Injected | None:
    if kind == "kill_worker":
        return injector.kill_worker(running)
    if kind == "stop_vm":
        return injector.stop_vm(running)
    if kind == "boot_failure":
        return injector.boot_failure(names)
    if kind == "stockout":
        return injector.stockout(zones)
    if kind == "duplicate_event":
        return injector.duplicate_event(done)
    if kind == "rewrite_done":
        return injector.rewrite_done(done)
    if kind == "delayed_event":
        return injector.hold_event(done)
    if kind == "publish_failure":
        return injector.publish_failure()
    return injector.cancel(live)


def _wait_terminal(observer: Observer, ids: set[str], until: float) -> dict[str, dict[str, Any]]:
    while True:
        jobs = observer.jobs()
        if all(jobs.get(j, {}).get("state") in TERMINAL for j in ids) or time.time() > until:
            return jobs
        time.sleep(1.0)


def measure(
    cfg: ChaosConfig,
    observer: Observer,
    run: Run,
    billed_before: dict[str, float],
    began: float,
    tenants: Tenants,
    disks: Path,
) -> dict[str, Any]:
    """Wait for the end, then compute the report's numbers."""
    ids = set(run.submitted)
    until = time.time() + cfg.job_timeout_s + cfg.reaper_period_s + 5
    jobs = _wait_terminal(observer, ids, until)
    finished = time.time()
    lost = sorted(j for j in ids if jobs.get(j, {}).get("state") not in TERMINAL)
    # Idle VMs stop after the drain grace and the next reaper period.
    up = observer.wait_all_terminated(timeout_s=60.0)
    billed_after = observer.billed_seconds()
    messages = observer.pull_results(idle_s=3.0, max_s=120.0)
    by_key: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    statuses: dict[str, set[str]] = defaultdict(set)
    for message in messages:
        job_id, status = (
            message["attributes"].get("job_id", ""),
            message["attributes"].get("status", ""),
        )
        by_key[(job_id, status)].add(message["data"])
        statuses[job_id].add(status)
    work_s = sum(
        float((d.get("worker_timings") or {}).get("execution_s") or 0.0) for d in jobs.values()
    )
    billed_s = sum(billed_after[n] - billed_before.get(n, 0.0) for n in billed_after)
    states = Counter(jobs.get(j, {}).get("state", "missing") for j in ids)
    changed, checked = models_changed(tenants, disks)
    # None when the Compute stand-in does not account RUNNING time (the target then fails).
    per_job = (billed_s - work_s) / max(1, len(ids)) if billed_after else None
    return {
        "jobs": len(ids),
        "vms": cfg.vms,
        "seed": cfg.seed,
        "makespan_s": round(finished - began, 1),
        "states": dict(sorted(states.items())),
        "jobs_lost": len(lost),
        "lost_ids": lost[:20],
        "jobs_completed_twice": sum(1 for s in statuses.values() if len(s) > 1),
        "duplicate_results_different_content": sum(1 for d in by_key.values() if len(d) > 1),
        "result_messages": len(messages),
        "terminal_jobs_without_result": sum(
            1 for j in ids if jobs.get(j, {}).get("state") in TERMINAL and j not in statuses
        ),
        "vms_running_at_end": len(up),
        "gpu_s_billed": round(billed_s, 1),
        "work_s": round(work_s, 1),
        "overhead_s_per_job": None if per_job is None else round(per_job, 2),
        "retried_jobs": sum(1 for j in ids if int(jobs.get(j, {}).get("attempt") or 1) > 1),
        "injected": dict(sorted(Counter(e.kind for e in run.injected).items())),
        "cross_tenant_reads": tenants.cross_tenant_reads,
        "cross_tenant_reads_tried": tenants.reads_tried,
        "models_changed": changed,
        "model_files_checked": checked,
        "hostile_jobs": dict(sorted(tenants.hostile.items())),
    }


def _targets(result: dict[str, Any]) -> list[tuple[str, Any, str, bool]]:
    return [
        ("jobs lost", result["jobs_lost"], "0", result["jobs_lost"] == 0),
        ("jobs completed twice", result["jobs_completed_twice"], "0",
         result["jobs_completed_twice"] == 0),
        ("duplicate results, different content", result["duplicate_results_different_content"],
         "0", result["duplicate_results_different_content"] == 0),
        ("VMs RUNNING at the end", result["vms_running_at_end"], "0",
         result["vms_running_at_end"] == 0),
        ("terminal jobs without a result message", result["terminal_jobs_without_result"], "0",
         result["terminal_jobs_without_result"] == 0),
        ("cross-tenant reads (2xx on the other tenant's ids, foreign files loaded)",
         result["cross_tenant_reads"], "0", result["cross_tenant_reads"] == 0),
        ("models changed (stored bytes not their hash; tenant A's model)",
         result["models_changed"], "0", result["models_changed"] == 0),
        ("(billed - work) / job, s", result["overhead_s_per_job"], f"≤ {OVERHEAD_TARGET_S:g}",
         result["overhead_s_per_job"] is not None
         and result["overhead_s_per_job"] <= OVERHEAD_TARGET_S),
    ]  # fmt: skip


def report(result: dict[str, Any], out: Path) -> bool:
    """Print the table, write the JSON; True when every target is met."""
    table = Table(
        title=f"chaos: {result['jobs']} jobs on {result['vms']} VMs, seed {result['seed']}"
    )
    for column in ("check", "value", "target", "ok"):
        table.add_column(column)
    checks = _targets(result)
    for name, value, target, ok in checks:
        table.add_row(name, str(value), target, "[green]yes[/green]" if ok else "[red]NO[/red]")
    console.print(table)
    shown = ("states", "injected", "hostile_jobs", "cross_tenant_reads_tried",
             "model_files_checked", "gpu_s_billed",
             "work_s", "makespan_s", "retried_jobs", "result_messages",
             "terminal_jobs_without_result")  # fmt: skip
    for key in shown:
        console.print(f"{key}: {result[key]}")
    rows = [{"check": n, "value": v, "target": t, "ok": ok} for n, v, t, ok in checks]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"name": "chaos", "meta": result, "rows": rows}, indent=2) + "\n")
    console.print(f"wrote {out}")
    return all(ok for *_, ok in checks)


def run_chaos(cfg: ChaosConfig) -> dict[str, Any]:
    """One chaos run on a fresh local cloud, torn down afterwards; returns the numbers."""
    rng = random.Random(cfg.seed)
    state_dir = cfg.state_dir or Path(tempfile.mkdtemp(prefix="comfyburst-chaos-"))
    faults = {"slow_node_class": "ImageBlur", "slow_node_s": cfg.slow_node_s, "sampler_steps": 5}
    console.print(f"chaos: {cfg.jobs} jobs, {cfg.vms} VMs, seed {cfg.seed}; state in {state_dir}")
    with model_server() as tenants, _cloud(cfg, state_dir, tenants, faults) as (cloud, config):
        assert len(vm_names(config)) == cfg.vms
        observer = Observer(cloud.env)
        injector = Injector(cloud.env, config.state_dir, random.Random(cfg.seed + 1))
        run, stop = Run(), threading.Event()
        billed_before = observer.billed_seconds()
        began = time.time()
        chaos = threading.Thread(
            target=_inject_loop, args=(cfg, observer, injector, run, stop), daemon=True
        )
        chaos.start()
        api_url = cloud.env["COMFYBURST_API_URL"]
        try:
            _submit_all(cfg, api_url, rng, run, tenants)
            # Tenant B attacks while A's jobs run: hostile jobs, then A's ids read and cancelled.
            client_b = client_of(api_url, tenants.keys["b"])
            a_jobs = sorted(run.submitted)
            run_hostile(tenants, client_b, a_jobs[0], workflow(rng, False))
            read_others(tenants, client_b, a_jobs)
            disks = disk_root(config.state_dir)
            result = measure(cfg, observer, run, billed_before, began, tenants, disks)
        finally:
            stop.set()
            chaos.join(timeout=60)
            injector.close()
            observer.close()
    result["events"] = [asdict(e) for e in run.injected]
    return result


@contextmanager
def _cloud(
    cfg: ChaosConfig, state_dir: Path, tenants: Tenants, faults: dict[str, Any]
) -> Iterator[tuple[Any, Any]]:
    """The run's local cloud: api_key auth with both tenants' keys, their model server."""
    config = cloud_config(
        state_dir,
        pool_size=cfg.vms,
        reaper_period_s=cfg.reaper_period_s,
        zones=("us-central1-a", "us-central1-b", "us-central1-c"),
        settings_env=tenants.settings_env(),
    )
    with running_cloud(config, standin_faults=faults) as cloud:
        yield cloud, config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.scenarios.chaos", description=__doc__
    )
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed)
    parser.add_argument("--job-timeout-s", type=int, default=ChaosConfig.job_timeout_s)
    parser.add_argument("--out", type=Path, default=ChaosConfig.out)
    args = parser.parse_args(argv)
    cfg = ChaosConfig(
        jobs=args.jobs, vms=args.vms, seed=args.seed, job_timeout_s=args.job_timeout_s, out=args.out
    )
    try:
        result = run_chaos(cfg)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the local cloud was stopped[/yellow]")
        return 130
    return 0 if report(result, cfg.out) else 1


if __name__ == "__main__":
    sys.exit(main())
