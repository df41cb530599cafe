"""Benchmark the cold path by phase: submit → first step from a fresh create and from a stopped
VM, against a job a draining VM takes (the warm baseline), in the same run.

Run: `.venv/bin/python -m tests.bench.bench_cold_path [--trials 2] [--scale 1.0]`.
Starts a local cloud on a pool of templates (one VM at most, no VM at start) whose Compute
stand-in and VM guest take the boot delays below, then per trial:

1. create: no VM exists; the job's submit creates one from the template (an empty disk);
2. warm: submitted as soon as job 1 succeeded, while its VM drains: the draining worker
   claims it (no boot, no start request);
3. stopped: submitted once that VM powered off after its drain; the dispatcher starts it.

Each job's phases come from `GET /jobs/{id}` (the job's record: docs/ARCHITECTURE.md, "Phases
and receipts"), so the table shows where the time went as the product records it.

Boot delays. No Google document gives a duration for a Compute Engine create or start, nor
for a guest's boot (the instance lifecycle page names PROVISIONING → STAGING → RUNNING without
times; the Google Cloud blog "Three steps to Compute Engine startup-time bliss" (2017) names
request, provisioning and boot and how to time them, with no figure in what we could read; the
only Google figure found, "approximately 5 seconds" for an L4 instance with drivers
pre-installed, is Cloud Run's, cloud.google.com/run/docs/configuring/services/gpu). So the
delays stay assumptions, scaled by `--scale`, checked against public measurements of CPU VMs
(none has a GPU; read 2026-12-02 through the search tool):
request → RUNNING 10 s (the stand-in's `staging_s`, the same for a start and a create), as a
`gcloud compute instances create` of an n1-standard-1 took (real 9.4 s and 9.6 s, a public gist
by ImJasonH, gist.github.com/ImJasonH/d3d26f15a52a079e1e0691cced5779b4, which also gives resume
"~8-10s"); RUNNING → the guest's units start 15 s, so request → guest up is 25 s, the
"~25 seconds for VMs with ≤32 CPUs" time-to-SSH of R. Aboukhalil's 2018 benchmark of ~5,000
VMs (medium.com/@robaboukhalil/move-fast-and-break-the-cloud-b55b899e3683); C. McAnlis (Google
Developer Advocate, Medium, 2017) measured 41.5 s create → SSH for a 2-vCPU Debian VM, which
`--scale 1.66` reproduces. The GPU driver's load is inside the 15 s and ComfyUI's own start,
20 s (Python, torch, CUDA init, custom nodes, while the agent claims and fetches), is an
assumption: nothing published. The price is $0.85362 per VM hour: g2-standard-8 $0.29358 + one
NVIDIA L4 $0.56004, us-central1, on demand, Google's SKU prices as transcribed by SkyPilot's
catalog (github.com/skypilot-org/skypilot-catalog, catalogs/v7/gcp/vms.csv at commit 017e2502;
Google's pricing pages render their tables with JavaScript and the tool got no rows); Spot there
was $0.11747 + $0.2231 = $0.34057, and Spot prices "can change up to once every day"
(cloud.google.com/spot-vms/pricing). docs/DEPLOY.md lists the other classes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

STAGING_S = 10.0
GUEST_BOOT_S = 15.0
COMFYUI_START_S = 20.0
DRAIN_GRACE_S = 5.0
PRICE_PER_HOUR = 0.85362  # g2-standard-8 + 1 L4, us-central1, on demand (docstring)
KINDS = ("create", "warm", "stopped")
# Phase name -> (from, to) fields of the job's phases (created_at: the job's submit).
SPANS = {
    "submit→requested": ("created_at", "requested_at"),
    "requested→RUNNING": ("requested_at", "running_at"),
    "RUNNING→guest boot": ("running_at", "guest_booted_at"),
    "guest boot→agent up": ("guest_booted_at", "agent_up_at"),
    "agent up→claim": ("agent_up_at", "claimed_at"),
    "agent up→ComfyUI ready": ("agent_up_at", "comfyui_ready_at"),
    "claim→models ready": ("claimed_at", "models_ready_at"),
    "models ready→first step": ("models_ready_at", "first_step_at"),
    "first step→done": ("first_step_at", "done_at"),
    "submit→claim": ("created_at", "claimed_at"),
    "submit→first step": ("created_at", "first_step_at"),
}


def _ts(value: Any) -> float | None:
    return None if value is None else datetime.fromisoformat(str(value)).timestamp()


def spans_of(job: dict[str, Any]) -> dict[str, float]:
    """Seconds of each phase a job's record has both ends of."""
    points = {"created_at": _ts(job.get("created_at"))}
    points.update({k: _ts(v) for k, v in (job.get("phases") or {}).items()})
    found = {}
    for name, (start, end) in SPANS.items():
        a, b = points.get(start), points.get(end)
        if a is not None and b is not None:
            found[name] = round(b - a, 2)
    return found


def _instances(env: dict[str, str]) -> list[dict[str, Any]]:
    response = requests.get(f"{env['COMFYBURST_COMPUTE_ENDPOINT']}/_standin/instances", timeout=10)
    response.raise_for_status()
    return list(response.json()["instances"])


def _wait_for(what: str, check: Any, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _all_stopped(env: dict[str, str]) -> bool:
    return all(vm["status"] == "TERMINATED" for vm in _instances(env))


def _delete_vms(env: dict[str, str]) -> None:
    """No VM left, no VM document: the next job creates one."""
    from localcloud.wipe import wipe_firestore

    _wait_for("the VMs to power off", lambda: _all_stopped(env))
    base = f"{env['COMFYBURST_COMPUTE_ENDPOINT']}/compute/v1/projects"
    for vm in _instances(env):
        url = f"{base}/{env['COMFYBURST_PROJECT_ID']}/zones/{vm['zone']}/instances/{vm['name']}"
        requests.delete(url, timeout=30).raise_for_status()
    _wait_for("the VMs to be deleted", lambda: not _instances(env))
    wipe_firestore(env)


def _run_job(client: Any, timeout_s: float) -> dict[str, Any]:
    from tests._e2e_support import invert_workflow

    # A workflow of its own: ComfyUI would answer an identical one from its cache.
    workflow = invert_workflow()
    for node in workflow.values():
        if "filename_prefix" in node.get("inputs", {}):
            node["inputs"]["filename_prefix"] = f"cb/cold-{time.monotonic_ns()}"
    submitted = client.submit({"workflow": workflow, "options": {"timeout_s": 900}})
    done = client.wait(submitted["job_id"], poll_s=0.2, timeout_s=timeout_s)
    if done["state"] != "succeeded":
        raise RuntimeError(f"job {done['job_id']} {done['state']}: {done.get('error')}")
    # The receipt's idle_after_s comes later; the phases and the receipt are fixed by now.
    return dict(client.get(submitted["job_id"]))


def _trial(env: dict[str, str], client: Any, timeout_s: float) -> dict[str, dict[str, Any]]:
    _delete_vms(env)
    jobs = {"create": _run_job(client, timeout_s), "warm": _run_job(client, timeout_s)}
    _wait_for("the VM to power off after its drain", lambda: _all_stopped(env))
    jobs["stopped"] = _run_job(client, timeout_s)
    return jobs


def _median(values: list[float], digits: int = 2) -> float | str:
    return round(statistics.median(values), digits) if values else ""


def _rows(trials: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per phase (and receipt part), one column per path: medians over the trials."""
    spans = {kind: [spans_of(t[kind]) for t in trials] for kind in KINDS}
    receipts = {
        kind: [t[kind]["receipt"] for t in trials if t[kind].get("receipt")] for kind in KINDS
    }
    rows: list[dict[str, Any]] = []
    for name in SPANS:
        row: dict[str, Any] = {"phase (s)": name}
        for kind in KINDS:
            row[kind] = _median([s[name] for s in spans[kind] if name in s])
        rows.append(row)
    for key, digits in (("boot_s", 2), ("idle_s", 2), ("run_s", 2), ("billed_s", 2)):
        rows.append(
            {"phase (s)": f"receipt {key}"}
            | {kind: _median([r[key] for r in receipts[kind]], digits) for kind in KINDS}
        )
    rows.append(
        {"phase (s)": "receipt cost_usd"}
        | {kind: _median([r["cost_usd"] for r in receipts[kind]], 6) for kind in KINDS}
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    from comfyburst.client import ApiClient, ClientSettings
    from localcloud.cloud import LocalCloud
    from localcloud.scenarios.harness import cloud_config, warm_up
    from localcloud.vm_guest import COMFYUI_START_ENV, GUEST_BOOT_ENV
    from tests.bench._report import write_report

    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_cold_path")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the boot delays")
    parser.add_argument("--keep", type=Path, help="keep the local cloud's state (logs) here")
    args = parser.parse_args(argv)
    staging_s, boot_s, comfy_s = (
        x * args.scale for x in (STAGING_S, GUEST_BOOT_S, COMFYUI_START_S)
    )
    timeout_s = 120 + 3 * (staging_s + boot_s + comfy_s)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as scratch:
        tmp = args.keep or scratch
        settings = {
            "COMFYBURST_DRAIN_GRACE_S": str(DRAIN_GRACE_S),
            "COMFYBURST_POOL_PRICE_PER_HOUR": str(PRICE_PER_HOUR),
            "COMFYBURST_BOOT_TIMEOUT_S": str(int(timeout_s)),
        }
        base = cloud_config(Path(tmp), pool_size=1, settings_env=settings, staging_s=staging_s)
        guest_env = {
            **base.guest_env,
            GUEST_BOOT_ENV: str(boot_s),
            COMFYUI_START_ENV: str(comfy_s),
        }
        cloud = LocalCloud(replace(base, pool_template=True, guest_env=guest_env))
        cloud.start()
        try:
            env = dict(cloud.env)
            warm_up(env)
            client = ApiClient(ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="none"))
            trials = [_trial(env, client, timeout_s) for _ in range(args.trials)]
        finally:
            cloud.stop()
    rows = _rows(trials)
    headline = next(r for r in rows if r["phase (s)"] == "submit→first step")
    warm = headline["warm"]
    meta = {
        "command": "python -m tests.bench.bench_cold_path "
        f"--trials {args.trials} --scale {args.scale}",
        "boot delays (assumed, checked against measured CPU VMs, s)": {
            "request→RUNNING (stand-in staging_s)": staging_s,
            "RUNNING→guest units start": boot_s,
            "ComfyUI start": comfy_s,
        },
        "baseline": f"warm: a draining VM takes the job, submit→first step {warm} s",
        "price_per_hour (g2-standard-8 + L4, us-central1, on demand)": PRICE_PER_HOUR,
        "submit→first step (median s)": {k: headline[k] for k in KINDS},
        "trials": args.trials,
    }
    write_report("cold_path", rows, meta)


if __name__ == "__main__":
    main()
