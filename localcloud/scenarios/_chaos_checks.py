"""What a chaos run checks at the end, and its report: the invariants and the pool's figures.

Beyond the job-level invariants (none lost, none completed twice, no duplicate result with
other bytes, a result message for every terminal job), on the pool of templates:

- `vms_running_at_end`: VMs not TERMINATED once the drain grace and a reaper period passed;
- `vms_unknown_to_firestore`: VMs with the pool's label that no `vms/` document knows;
- `attempts_beyond_faults`: over all jobs, attempt - 1 - preemptions - the faults aimed at
  that job (killed worker, VM stopped), when positive. A preemption counted as an attempt, or
  a retry nothing injected explains, shows up here; it may not exceed the VM faults that hit
  no particular job (boot failures, hung STAGING, failed creates: each insert a create failure
  fails), plus aimed faults their target did not use (they landed on the VM's next job), which
  can cost one attempt each; the jobs it counts are listed;
- `timed_out_unexplained`: jobs that ended `timed_out` although no injected outage left every
  zone without capacity at any time of their life (submit to end); target 0 (a job that times
  out otherwise is one the system failed to run, not one that "ended");
- `hostile_jobs_hung`: tenant B's hostile jobs that ended `timed_out` or whose wait never
  ended: each should run or fail fast with a reason; target none;
- VMs created vs reused (starts of a stopped VM) and preemptions (the stand-in's count) and
  those survived (jobs that succeeded after one).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from localcloud.scenarios._chaos_faults import (
    JOB_FAULTS,
    UNAIMED_VM_FAULTS,
    Injected,
    no_capacity_windows,
)
from localcloud.scenarios._chaos_tenants import Tenants, hung, models_changed
from localcloud.scenarios.harness import Observer

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
OVERHEAD_TARGET_S = 15.0
console = Console()


def wait_terminal(observer: Observer, ids: set[str], until: float) -> dict[str, dict[str, Any]]:
    """Poll the job documents until every one of `ids` is terminal or `until` passed."""
    while True:
        jobs = observer.jobs()
        if all(jobs.get(j, {}).get("state") in TERMINAL for j in ids) or time.time() > until:
            return jobs
        time.sleep(1.0)


def pool_figures(env: Mapping[str, str], observer: Observer) -> dict[str, Any]:
    """VMs unknown to Firestore, and the stand-in's counters (created, started, preempted)."""
    from google.cloud import firestore

    key, _, value = env["COMFYBURST_POOL_LABEL"].partition("=")
    pool = [vm["name"] for vm in observer.instances() if vm["labels"].get(key) == value]
    client = firestore.Client(project=env["COMFYBURST_PROJECT_ID"])
    try:
        known = {doc.id for doc in client.collection("vms").select([]).stream()}
    finally:
        client.close()
    stats = requests.get(f"{env['COMFYBURST_COMPUTE_ENDPOINT']}/_standin/stats", timeout=30)
    stats.raise_for_status()
    counters = stats.json()
    return {
        "vms_with_pool_label": len(pool),
        "vms_unknown_to_firestore": len(set(pool) - known),
        "unknown_vms": sorted(set(pool) - known)[:20],
        "vms_created": int(counters.get("created", 0)),
        "vms_reused": int(counters.get("started", 0)),
        "vms_deleted": int(counters.get("deleted", 0)),
        "preemptions": int(counters.get("preempted", 0)),
    }


def attempt_figures(
    jobs: Mapping[str, Mapping[str, Any]], ids: set[str], injected: list[Injected]
) -> dict[str, Any]:
    """Attempts against preemptions and the faults that could explain them (module doc)."""
    aimed = Counter(e.target for e in injected if e.kind in JOB_FAULTS)
    beyond, preempted, survived = 0, 0, 0
    beyond_ids: list[str] = []
    # A fault aimed at a job's VM hits whatever job that VM runs when it lands (a draining VM
    # may have claimed the next one): one its target did not use may explain another's attempt.
    spare = 0
    for job_id in ids:
        doc = jobs.get(job_id, {})
        attempt, preemptions = int(doc.get("attempt") or 1), int(doc.get("preemptions") or 0)
        retries = max(0, attempt - 1 - preemptions)
        unexplained = max(0, retries - aimed[job_id])
        spare += max(0, aimed[job_id] - retries)
        beyond += unexplained
        if unexplained:
            beyond_ids.append(job_id)
        if preemptions:
            preempted += 1
            survived += preemptions if doc.get("state") == "succeeded" else 0
    return {
        "attempts_beyond_faults": beyond,
        "attempts_beyond_faults_ids": sorted(beyond_ids)[:20],
        "unaimed_vm_faults": sum(e.hits for e in injected if e.kind in UNAIMED_VM_FAULTS) + spare,
        "jobs_preempted": preempted,
        "preemptions_survived": survived,
    }


def _epoch(value: Any) -> float | None:
    """A job document's timestamp (datetime, or ISO text) as seconds since the epoch."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def timed_out_figures(
    jobs: Mapping[str, Mapping[str, Any]],
    ids: set[str],
    no_capacity: Sequence[tuple[float, float]],
) -> dict[str, Any]:
    """Timed-out jobs, and those of them no injected fault explains: a job is explained only
    when its life (created_at to finished_at) overlaps a window (`no_capacity`, start and end
    in epoch seconds) in which injected outages left no zone with capacity."""
    timed_out, unexplained = [], []
    for job_id in sorted(ids):
        doc = jobs.get(job_id, {})
        if doc.get("state") != "timed_out":
            continue
        timed_out.append(job_id)
        born = _epoch(doc.get("created_at"))
        ended = _epoch(doc.get("finished_at")) or _epoch(doc.get("state_changed_at"))
        explained = (
            born is not None
            and ended is not None
            and any(start < ended and born < end for start, end in no_capacity)
        )
        if not explained:
            unexplained.append(job_id)
    return {
        "timed_out": len(timed_out),
        "timed_out_unexplained": len(unexplained),
        "timed_out_unexplained_ids": unexplained[:20],
    }


def measure(
    cfg: Any,
    observer: Observer,
    run: Any,
    billed_before: dict[str, float],
    began: float,
    tenants: Tenants,
    disks: Path,
) -> dict[str, Any]:
    """Wait for the end, then compute the report's numbers."""
    ids = set(run.submitted)
    until = time.time() + cfg.job_timeout_s + cfg.reaper_period_s + 5
    jobs = wait_terminal(observer, ids, until)
    finished = time.time()
    lost = sorted(j for j in ids if jobs.get(j, {}).get("state") not in TERMINAL)
    # Idle VMs stop after the drain grace and the next reaper period.
    up = observer.wait_all_terminated(timeout_s=90.0)
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
    # The stand-in's total counts the VMs the reaper deleted too.
    billed_s = sum(billed_after[n] - billed_before.get(n, 0.0) for n in billed_after)
    states = Counter(jobs.get(j, {}).get("state", "missing") for j in ids)
    changed, checked = models_changed(tenants, disks)
    # None when the Compute stand-in does not account RUNNING time (the target then fails).
    per_job = (billed_s - work_s) / max(1, len(ids)) if billed_after else None
    return {
        "jobs": len(ids),
        "vms": cfg.vms,
        "zones": list(cfg.zones),
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
        **pool_figures(observer.env, observer),
        **attempt_figures(jobs, ids, run.injected),
        **timed_out_figures(
            jobs, ids, no_capacity_windows(run.capacity_log, set(cfg.zones), finished)
        ),
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
        "hostile_jobs_hung": hung(tenants.hostile),
    }


def _targets(result: dict[str, Any]) -> list[tuple[str, Any, str, bool]]:
    beyond, unaimed = result["attempts_beyond_faults"], result["unaimed_vm_faults"]
    return [
        ("jobs lost", result["jobs_lost"], "0", result["jobs_lost"] == 0),
        ("jobs completed twice", result["jobs_completed_twice"], "0",
         result["jobs_completed_twice"] == 0),
        ("duplicate results, different content", result["duplicate_results_different_content"],
         "0", result["duplicate_results_different_content"] == 0),
        ("jobs timed out that no injected fault explains", result["timed_out_unexplained"],
         "0", result["timed_out_unexplained"] == 0),
        ("VMs RUNNING at the end", result["vms_running_at_end"], "0",
         result["vms_running_at_end"] == 0),
        ("VMs with the pool label unknown to Firestore", result["vms_unknown_to_firestore"], "0",
         result["vms_unknown_to_firestore"] == 0),
        ("attempts beyond preemptions + the job's own faults", beyond,
         f"≤ {unaimed} (VM faults aimed at no job)", beyond <= unaimed),
        ("terminal jobs without a result message", result["terminal_jobs_without_result"], "0",
         result["terminal_jobs_without_result"] == 0),
        ("cross-tenant reads (2xx on the other tenant's ids, foreign files loaded)",
         result["cross_tenant_reads"], "0", result["cross_tenant_reads"] == 0),
        ("models changed (stored bytes not their hash; tenant A's model)",
         result["models_changed"], "0", result["models_changed"] == 0),
        ("B's jobs that timed out or never ended (neither ran nor failed with a reason)",
         len(result["hostile_jobs_hung"]), "0", not result["hostile_jobs_hung"]),
        ("(billed - work) / job, s", result["overhead_s_per_job"], f"≤ {OVERHEAD_TARGET_S:g}",
         result["overhead_s_per_job"] is not None
         and result["overhead_s_per_job"] <= OVERHEAD_TARGET_S),
    ]  # fmt: skip


SHOWN = (
    "states", "injected", "vms_created", "vms_reused", "vms_deleted", "vms_with_pool_label",
    "preemptions", "jobs_preempted", "preemptions_survived", "zones", "hostile_jobs",
    "hostile_jobs_hung",
    "cross_tenant_reads_tried", "model_files_checked", "gpu_s_billed", "work_s", "makespan_s",
    "retried_jobs", "result_messages", "terminal_jobs_without_result", "timed_out",
    "timed_out_unexplained_ids",
)  # fmt: skip


def report(result: dict[str, Any], out: Path) -> bool:
    """Print the table, write the JSON; True when every target is met."""
    table = Table(
        title=f"chaos: {result['jobs']} jobs on up to {result['vms']} VMs, seed {result['seed']}"
    )
    for column in ("check", "value", "target", "ok"):
        table.add_column(column)
    checks = _targets(result)
    for name, value, target, ok in checks:
        table.add_row(name, str(value), target, "[green]yes[/green]" if ok else "[red]NO[/red]")
    console.print(table)
    for key in SHOWN:
        console.print(f"{key}: {result[key]}")
    rows = [{"check": n, "value": v, "target": t, "ok": ok} for n, v, t, ok in checks]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"name": "chaos", "meta": result, "rows": rows}, indent=2) + "\n")
    console.print(f"wrote {out}")
    return all(ok for *_, ok in checks)
