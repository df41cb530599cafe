"""`make chaos` / `python -m localcloud.scenarios.chaos`: many jobs on a pool of Spot VMs
made on demand (up to 8, none at the start, zones in two regions), under faults.

Submits N jobs through the API while injecting, at random with a fixed seed, the faults of
`_chaos_faults.KINDS` (killed workers, VMs stopped behind the system's back, Spot preemptions,
boot failures, VMs hung in STAGING, failed creates, quota errors, stockouts, an outage that
moves between zones and regions, duplicate / rewritten / delayed done events, publish failures,
cancels; a share of the jobs runs a slow ComfyUI node; a stockout of the region holding most of
the pool's VMs that lasts while any of them sits there). Then checks (`_chaos_checks.py`) what
must hold whatever crashes:

- jobs lost: not terminal by their deadline plus one reaper period (target 0);
- jobs timed out that no injected fault explains (no outage left every zone without
  capacity during their life) (target 0);
- jobs completed twice: more than one terminal status published for a job (target 0);
- duplicate result messages with different content, per job_id + status (target 0);
- VMs still RUNNING at the end (target 0), VMs with the pool's label that no `vms/` document
  knows (target 0);
- preemptions never counted as attempts: attempt - 1 - preemptions - the job's own faults,
  summed, at most the VM faults aimed at no job;
- VMs created vs reused, preemptions and those survived (reported);
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from localcloud.config import REPO_ROOT
from localcloud.scenarios import _chaos_guest
from localcloud.scenarios._chaos_checks import TERMINAL, measure, report
from localcloud.scenarios._chaos_faults import Injected, Injector
from localcloud.scenarios._chaos_tenants import Tenants, model_server, read_others, run_hostile
from localcloud.scenarios.harness import Observer, cloud_config, disk_root, running_cloud

__all__ = ["ChaosConfig", "main", "report", "run_chaos"]

# Three zones in two regions: an outage can take a zone or a whole region.
ZONES = ("us-central1-a", "us-central1-b", "us-east4-a")
console = Console()


@dataclass
class ChaosConfig:
    """How big the run is and how much goes wrong; fault counts scale with `jobs`."""

    jobs: int = 500
    vms: int = 8  # the pool's limit (in all and per zone); it starts with none
    zones: tuple[str, ...] = ZONES
    seed: int = 20261128
    slow_share: float = 0.1  # jobs with the slow ImageBlur node
    slow_node_s: float = 3.0
    cancel_share: float = 0.03
    fault_share: float = 0.02  # of each VM/event fault kind, per job
    job_timeout_s: int = 900
    # A VM hung in STAGING costs its job this long before the reaper retries it elsewhere.
    boot_timeout_s: int = 45
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
            "preempt": 2 * each,
            # At least two, so the outage moves at least once.
            "moving_stockout": max(2, each),
            # Once: it lasts while the pool's VMs sit in its region (the pool must move).
            "pinning_stockout": 1,
            "create_failure": each,
            "quota": each,
            "staging_hang": each,
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
    # The injector's (time.time(), zones out from then on), shared as it grows.
    capacity_log: list[tuple[float, frozenset[str]]] = field(default_factory=list)
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
    zones = sorted(cfg.zones)
    pending = list(zip(marks, plan, strict=True))
    release_at = cfg.jobs * 0.95
    while not stop.wait(0.5) and (pending or injector.held or injector.pinned):
        jobs = _states(observer)
        done = [j for j, d in jobs.items() if d.get("state") in TERMINAL]
        if len(done) >= min(release_at, len(jobs)):
            if injector.held:
                run.injected += injector.release_held()
            if injector.outage:
                injector.end_outages(zones)
        pinning = injector.pinned or any(k == "pinning_stockout" for _, k in pending)
        pool = _pool(observer) if pinning else []
        ended = injector.release_pin(zones, pool)
        if ended is not None:
            run.injected.append(ended)
        while pending and pending[0][0] <= len(done):
            _, kind = pending.pop(0)
            running = [d for d in jobs.values() if d.get("state") == "running"]
            live = [j for j, d in jobs.items() if d.get("state") not in TERMINAL]
            if kind == "pinning_stockout":
                event = injector.pinning_stockout(zones, pool)
            else:
                event = _one(kind, injector, running, done, live, zones)
            if event is not None:
                run.injected.append(event)
            elif kind in ("kill_worker", "stop_vm", "preempt", "cancel", "pinning_stockout"):
                pending.append((len(done) + 1, kind))  # nothing to hit now; try a bit later
                pending.sort()
                break
    if stop.is_set() and injector.held:
        run.injected += injector.release_held()
    if injector.outage:
        injector.end_outages(zones)


def _pool(observer: Observer) -> list[dict[str, Any]]:
    """The stand-in's records of the pool's VMs (by the pool's label)."""
    key, _, value = observer.env["COMFYBURST_POOL_LABEL"].partition("=")
    return [vm for vm in observer.instances() if vm.get("labels", {}).get(key) == value]


def _one(
    kind: str,
    injector: Injector,
    running: list[dict[str, Any]],
    done: list[str],
    live: list[str],
    zones: list[str],
) -> Injected | None:
    if kind == "kill_worker":
        return injector.kill_worker(running)
    if kind == "stop_vm":
        return injector.stop_vm(running)
    if kind == "preempt":
        return injector.preempt(running)
    if kind == "boot_failure":
        return injector.boot_failure()
    if kind == "staging_hang":
        return injector.staging_hang()
    if kind == "create_failure":
        return injector.create_failure()
    if kind == "quota":
        return injector.quota(zones)
    if kind == "stockout":
        return injector.stockout(zones)
    if kind == "moving_stockout":
        return injector.moving_stockout(zones)
    if kind == "duplicate_event":
        return injector.duplicate_event(done)
    if kind == "rewrite_done":
        return injector.rewrite_done(done)
    if kind == "delayed_event":
        return injector.hold_event(done)
    if kind == "publish_failure":
        return injector.publish_failure()
    return injector.cancel(live)


def run_chaos(cfg: ChaosConfig) -> dict[str, Any]:
    """One chaos run on a fresh local cloud, torn down afterwards; returns the numbers."""
    rng = random.Random(cfg.seed)
    state_dir = cfg.state_dir or Path(tempfile.mkdtemp(prefix="comfyburst-chaos-"))
    faults = {"slow_node_class": "ImageBlur", "slow_node_s": cfg.slow_node_s, "sampler_steps": 5}
    console.print(
        f"chaos: {cfg.jobs} jobs, up to {cfg.vms} Spot VMs made on demand in "
        f"{', '.join(cfg.zones)}, seed {cfg.seed}; state in {state_dir}"
    )
    with model_server() as tenants, _cloud(cfg, state_dir, tenants, faults) as (cloud, config):
        observer = Observer(cloud.env)
        injector = Injector(
            cloud.env, config.state_dir, random.Random(cfg.seed + 1), tenants.keys["a"]
        )
        run, stop = Run(capacity_log=injector.capacity_log), threading.Event()
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
            run_hostile(tenants, client_b, a_jobs[0], workflow(rng, False), cfg.job_timeout_s)
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
    """The run's local cloud: a pool of Spot templates (no VM at the start, up to `cfg.vms`),
    api_key auth with both tenants' keys, their model server; every VM boots with `faults`
    for its ComfyUI stand-in."""
    base = cloud_config(
        state_dir,
        pool_size=cfg.vms,
        reaper_period_s=cfg.reaper_period_s,
        zones=cfg.zones,
        settings_env={
            **tenants.settings_env(),
            "COMFYBURST_BOOT_TIMEOUT_S": str(cfg.boot_timeout_s),
        },
    )
    config = replace(
        base,
        pool_template=True,
        spot=True,
        guest_argv=[sys.executable, "-m", "localcloud.scenarios._chaos_guest"],
        guest_env={**base.guest_env, _chaos_guest.ENV_VAR: json.dumps(faults)},
    )
    with running_cloud(config) as cloud:
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
