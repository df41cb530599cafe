"""`make fair-pool` / `python -m localcloud.scenarios.fair_pool`: a pool shared by three callers
of unequal load, run once per dispatch order (fair share, then the old FIFO), side by side.

Each run starts its own local cloud with two GPU classes: `busy`, a small pool (`--busy-vms`)
that the heavy caller fills, and `free`, with room to spare (`--free-vms`). Three API keys:
`heavy` queues `--heavy-jobs` jobs on `busy`, then `light-1` and `light-2` queue `--light-jobs`
each, alternating `busy` and `free`. Every job runs one slow stand-in node of `--work-s`
seconds. The run waits for every job and reports, per caller and per class: jobs, lost (not
terminal by the deadline), failed (terminal, not succeeded), and the wait of each job from
`created_at` (submit) to `started_at` (its worker claimed it and it entered `running`): max,
p50, p95. `light ahead` counts the light callers' `busy` jobs that started before the heavy
caller's last job did: under fair share all of them, under FIFO none. Prints the table and
writes `.bench/fair_pool.json` (`make bench`'s report picks it up).

The bound the run holds fair share to (`bound_s`): every light caller's job, and every job of
the class with room (`free`), starts within the time the busy class needs for the round it is
running and the rounds of the light callers' own `busy` jobs (one job per VM a round, each
round `work_s` plus `JOB_OVERHEAD_S`), plus two reaper periods and `START_S` for a VM's start.
It does not grow with the heavy backlog; FIFO's light waits do, and are printed against it for
contrast. Exit 1: a job lost or failed in either order, or fair share over its bound.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from localcloud import _gpu_classes
from localcloud.config import REPO_ROOT, LocalGpuClass
from localcloud.scenarios import _chaos_guest
from localcloud.scenarios._chaos_checks import TERMINAL, _epoch, wait_terminal
from localcloud.scenarios.chaos import workflow
from localcloud.scenarios.harness import Observer, cloud_config, running_cloud

__all__ = ["FairPoolConfig", "main", "run_order", "summarize"]

BUSY = LocalGpuClass("busy", ("us-central1-a",), price_per_hour=0.7)
FREE = LocalGpuClass("free", ("us-central1-b",), price_per_hour=0.7)
HEAVY = "heavy"
ORDERS = ("fair", "fifo")


@dataclass
class FairPoolConfig:
    """How big a run is; sizes are flags of `main`."""

    heavy_jobs: int = 20
    light_jobs: int = 2  # per light caller
    light_callers: int = 2
    busy_vms: int = 2
    free_vms: int = 2
    two_classes: bool = True  # False: the light callers' jobs go to `busy` too, one class only
    work_s: float = 2.0
    job_timeout_s: int = 600
    reaper_period_s: float = 2.0
    seed: int = 20261207

    def callers(self) -> list[str]:
        return [HEAVY, *(f"light-{i + 1}" for i in range(self.light_callers))]


def _classes_env(config: Any, cfg: FairPoolConfig) -> dict[str, str]:
    """COMFYBURST_GPU_CLASSES as the local cloud renders it, each class with its own max_vms."""
    declared = json.loads(_gpu_classes.settings_env(config)["COMFYBURST_GPU_CLASSES"])
    sizes = {BUSY.name: cfg.busy_vms, FREE.name: cfg.free_vms}
    for entry in declared:
        entry["max_vms"] = entry["max_vms_per_zone"] = sizes[entry["name"]]
    return {"COMFYBURST_GPU_CLASSES": json.dumps(declared)}


def _plan(cfg: FairPoolConfig) -> list[tuple[str, str]]:
    """(caller, class) of each job in submit order: the heavy caller's backlog, then the rest."""
    jobs = [(HEAVY, BUSY.name)] * cfg.heavy_jobs
    for i in range(cfg.light_jobs):
        gpu_class = FREE.name if cfg.two_classes and i % 2 else BUSY.name
        jobs += [(caller, gpu_class) for caller in cfg.callers()[1:]]
    return jobs


def run_order(cfg: FairPoolConfig, order: str, state_dir: Path | None = None) -> list[dict]:
    """One run on a fresh local cloud under `dispatch_order=order`: each job's caller, class,
    state, created/started (epoch seconds) and wait."""
    from comfyburst.client import ApiClient, ClientSettings

    state_dir = state_dir or Path(tempfile.mkdtemp(prefix=f"comfyburst-fair-{order}-"))
    keys = {c: f"fair-{c}-{secrets.token_hex(8)}" for c in cfg.callers()}
    hashes = ",".join(f"{c}={hashlib.sha256(k.encode()).hexdigest()}" for c, k in keys.items())
    classes = (BUSY, FREE) if cfg.two_classes else (BUSY,)
    base = cloud_config(
        state_dir,
        pool_size=max(cfg.busy_vms, cfg.free_vms),
        reaper_period_s=cfg.reaper_period_s,
        zones=("us-central1-a", "us-central1-b"),
    )
    # VMs made from templates are named at creation: each guest arms the stand-in's slow node
    # on its own disk (the chaos run's guest).
    faults = {"slow_node_class": "ImageBlur", "slow_node_s": cfg.work_s, "sampler_steps": 4}
    config = replace(
        base,
        gpu_classes=classes,
        guest_argv=[sys.executable, "-m", "localcloud.scenarios._chaos_guest"],
        guest_env={**base.guest_env, _chaos_guest.ENV_VAR: json.dumps(faults)},
    )
    settings = {
        "COMFYBURST_AUTH_MODE": "api_key",
        "COMFYBURST_API_KEY_HASHES": hashes,
        "COMFYBURST_DISPATCH_ORDER": order,
        **_classes_env(config, cfg),
    }
    config = replace(config, settings_env={**config.settings_env, **settings})
    rng = random.Random(cfg.seed)
    with running_cloud(config) as cloud:
        url = cloud.env["COMFYBURST_API_URL"]
        clients = {
            c: ApiClient(ClientSettings(api_url=url, auth="api_key", api_key=k, timeout_s=120))
            for c, k in keys.items()
        }
        plan = _plan(cfg)
        bodies = [
            {
                "workflow": workflow(rng, slow=True),
                "options": {"gpu_class": gpu_class, "timeout_s": cfg.job_timeout_s},
            }
            for _, gpu_class in plan
        ]
        # The heavy caller's backlog is in before anyone else submits (a few threads at once).
        heavy = [i for i, (caller, _) in enumerate(plan) if caller == HEAVY]
        rest = [i for i, (caller, _) in enumerate(plan) if caller != HEAVY]
        ids: dict[int, str] = {}
        with ThreadPoolExecutor(4) as pool:
            for batch in (heavy, rest):
                submitted = pool.map(lambda i: clients[plan[i][0]].submit(bodies[i]), batch)
                ids.update(zip(batch, (job["job_id"] for job in submitted), strict=True))
        observer = Observer(cloud.env)
        docs = wait_terminal(observer, set(ids.values()), time.time() + cfg.job_timeout_s + 60)
        observer.close()
    out = []
    for i, (caller, gpu_class) in enumerate(plan):
        doc = docs.get(ids[i], {})
        created, started = _epoch(doc.get("created_at")), _epoch(doc.get("started_at"))
        out.append(
            {
                "job_id": ids[i],
                "caller": caller,
                "gpu_class": gpu_class,
                "state": doc.get("state"),
                "created": created,
                "started": started,
                "wait_s": None if created is None or started is None else started - created,
            }
        )
    return out


# A job's own bookkeeping on the local cloud beyond its work (claim, run, flag; about 1 s
# measured on a 2-core machine), and a VM's start from its template (stand-in staging, guest).
JOB_OVERHEAD_S = 1.0
START_S = 5.0


def bound_s(cfg: FairPoolConfig) -> float:
    """The wait every light job and every job of the roomy class must start within (above)."""
    light_busy = sum(1 for caller, c in _plan(cfg) if caller != HEAVY and c == BUSY.name)
    rounds = 1 + math.ceil(light_busy / cfg.busy_vms)
    return round(rounds * (cfg.work_s + JOB_OVERHEAD_S) + 2 * cfg.reaper_period_s + START_S, 1)


def verdict(summary: dict[str, Any], bound: float) -> dict[str, Any]:
    """Whether an order's light callers and roomy class started within `bound`."""
    groups = summary["groups"]
    checked = {
        name: stats["max_wait_s"]
        for name, stats in groups.items()
        if (name.startswith("caller ") and name != f"caller {HEAVY}")
        or name == f"class {FREE.name}"
    }
    over = {n: w for n, w in checked.items() if w is None or w > bound}
    return {"bound_s": bound, "max_wait_s": checked, "within": not over, "over": over}


def _pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p * len(ranked)) - 1)]


def _stats(jobs: Iterable[dict]) -> dict[str, Any]:
    jobs = list(jobs)
    waits = [j["wait_s"] for j in jobs if j["wait_s"] is not None]
    lost = sum(1 for j in jobs if j["state"] not in TERMINAL)
    failed = sum(1 for j in jobs if j["state"] in TERMINAL and j["state"] != "succeeded")

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {
        "jobs": len(jobs),
        "max_wait_s": r(max(waits) if waits else None),
        "p50_wait_s": r(_pct(waits, 0.5)),
        "p95_wait_s": r(_pct(waits, 0.95)),
        "lost": lost,
        "failed": failed,
    }


def summarize(jobs: list[dict]) -> dict[str, Any]:
    """Per caller and per class, and how many light jobs on `busy` beat the heavy backlog."""
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        groups.setdefault(f"caller {job['caller']}", []).append(job)
    for job in jobs:
        groups.setdefault(f"class {job['gpu_class']}", []).append(job)
    heavy_starts = [j["started"] for j in jobs if j["caller"] == HEAVY and j["started"]]
    last_heavy = max(heavy_starts) if heavy_starts else math.inf
    light_busy = [j for j in jobs if j["caller"] != HEAVY and j["gpu_class"] == BUSY.name]
    ahead = sum(1 for j in light_busy if j["started"] is not None and j["started"] < last_heavy)
    return {
        "groups": {name: _stats(members) for name, members in groups.items()},
        "all": _stats(jobs),
        "light_busy_jobs": len(light_busy),
        "light_ahead_of_heavy_backlog": ahead,
    }


_COLUMNS = ("jobs", "max_wait_s", "p50_wait_s", "p95_wait_s", "lost", "failed")


def table(summaries: dict[str, dict[str, Any]]) -> Table:
    """One row per caller and class; for each order its max / p50 / p95 wait and lost."""
    orders = list(summaries)
    out = Table(title="fair pool: wait from submit to running (s), per dispatch order")
    out.add_column("group", justify="left")
    out.add_column("jobs", justify="right")
    for order in orders:
        out.add_column(f"{order} max / p50 / p95", justify="right")
        out.add_column(f"{order} lost/failed", justify="right")
    names = list(dict.fromkeys(n for s in summaries.values() for n in s["groups"]))
    for name in [*names, "all"]:
        cells: list[str] = []
        jobs = ""
        for order in orders:
            row = summaries[order]["all"] if name == "all" else summaries[order]["groups"][name]
            jobs = str(row["jobs"])
            waits = (row["max_wait_s"], row["p50_wait_s"], row["p95_wait_s"])
            cells += [" / ".join(str(w) for w in waits), f"{row['lost']}/{row['failed']}"]
        out.add_row(name, jobs, *cells)
    ahead = [
        f"{s['light_ahead_of_heavy_backlog']}/{s['light_busy_jobs']}" for s in summaries.values()
    ]
    out.add_row("light on busy before heavy's last", "", *(c for a in ahead for c in (a, "")))
    return out


def rows_of(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON rows: one per group and order."""
    rows = []
    for order, summary in summaries.items():
        for name, stats in [*summary["groups"].items(), ("all", summary["all"])]:
            rows.append({"order": order, "group": name, **stats})
    return rows


def main(argv: list[str] | None = None) -> int:
    defaults = FairPoolConfig()
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.scenarios.fair_pool", description=__doc__
    )
    parser.add_argument("--heavy-jobs", type=int, default=defaults.heavy_jobs)
    parser.add_argument("--light-jobs", type=int, default=defaults.light_jobs)
    parser.add_argument("--light-callers", type=int, default=defaults.light_callers)
    parser.add_argument("--busy-vms", type=int, default=defaults.busy_vms)
    parser.add_argument("--free-vms", type=int, default=defaults.free_vms)
    parser.add_argument("--one-class", action="store_true", help="every job on `busy`")
    parser.add_argument("--work-s", type=float, default=defaults.work_s)
    parser.add_argument("--job-timeout-s", type=int, default=defaults.job_timeout_s)
    parser.add_argument("--orders", default=",".join(ORDERS), help="e.g. fair or fair,fifo")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".bench" / "fair_pool.json")
    args = parser.parse_args(argv)
    cfg = FairPoolConfig(
        heavy_jobs=args.heavy_jobs,
        light_jobs=args.light_jobs,
        light_callers=args.light_callers,
        busy_vms=args.busy_vms,
        free_vms=args.free_vms,
        two_classes=not args.one_class,
        work_s=args.work_s,
        job_timeout_s=args.job_timeout_s,
    )
    console = Console()
    if not console.is_terminal:  # piped or logged: wide enough for both orders side by side
        console = Console(width=120)
    summaries: dict[str, dict[str, Any]] = {}
    durations: dict[str, float] = {}
    for order in args.orders.split(","):
        began = time.monotonic()
        console.print(f"== dispatch_order={order}")
        summaries[order] = summarize(run_order(cfg, order))
        durations[order] = round(time.monotonic() - began, 1)
    console.print(table(summaries))
    bound = bound_s(cfg)
    verdicts = {order: verdict(summary, bound) for order, summary in summaries.items()}
    console.print(
        f"bound: light callers and class {FREE.name} start within {bound} s "
        f"(rounds of work {cfg.work_s} + {JOB_OVERHEAD_S} s on {cfg.busy_vms} busy VMs, "
        f"2 reaper periods, {START_S} s start)"
    )
    for order, v in verdicts.items():
        shown = ", ".join(f"{n} {w}" for n, w in v["max_wait_s"].items())
        console.print(f"  {order}: {'within' if v['within'] else 'OVER'} (max waits: {shown})")
    meta = {
        "wait": "created_at (submit) to started_at (claimed by its worker, entered running)",
        "config": asdict(cfg),
        "run_s": durations,
        "light_ahead_of_heavy_backlog": {
            o: f"{s['light_ahead_of_heavy_backlog']}/{s['light_busy_jobs']}"
            for o, s in summaries.items()
        },
        "bound": verdicts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = {"name": "fair_pool", "meta": meta, "rows": rows_of(summaries)}
    args.out.write_text(json.dumps(body, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    broken = sum(s["all"]["lost"] + s["all"]["failed"] for s in summaries.values())
    unfair = "fair" in verdicts and not verdicts["fair"]["within"]
    return 1 if broken or unfair else 0


if __name__ == "__main__":
    sys.exit(main())
