"""Environments on the local cloud: how long one takes to build, what a VM's first job in it
pays to ready it (layer download, unpack, ComfyUI restart), and what a job pays once it is
loaded, against jobs without an environment in the same run.

One pack made here as a git repository served over loopback, its requirement a wheel made here
(tests/_env_pack_support.py); a pool of `--pool-size` VMs (worker + ComfyUI stand-in), all
booted by warm-up jobs first. Placement picks each job's VM, so the summary classifies the jobs
by what they met (the VM, whether its layer was downloaded); the build job does not keep its
layer in its VM's cache (it uploads the archive), so every VM's first job downloads it.

Run: `.venv/bin/python -m tests.bench.bench_environments [--pool-size 2] [--rounds 3]`. Prints
a table, writes `.bench/environments.json`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from comfyburst.client import ApiClient, ClientSettings
from comfyburst.services.environments import build_job_id
from localcloud.scenarios.chaos import workflow
from localcloud.scenarios.harness import Observer, cloud_config, running_cloud
from tests._env_pack_support import (
    double_and_show_pack,
    git_http_server,
    make_base_venv,
    make_wheelhouse,
    pip_args,
    serve_pack,
)
from tests.bench._report import write_report

NODE, SHOW = "CbBenchDouble", "CbBenchShow"
PACK = double_and_show_pack(NODE, SHOW)
JOB_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 600


def _seconds(start: Any, end: Any) -> float | None:
    if not start or not end:
        return None
    return round(
        (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds(), 3
    )


def _job_row(step: str, client: ApiClient, request: dict[str, Any]) -> dict[str, Any]:
    began = time.monotonic()
    job = client.submit(request)
    done = client.wait(job["job_id"], poll_s=0.3, timeout_s=JOB_TIMEOUT_S)
    wall_s = time.monotonic() - began
    if done.get("state") != "succeeded":
        raise RuntimeError(f"{step}: job ended {done.get('state')}: {done.get('error')}")
    timings, phases = done.get("worker_timings") or {}, done.get("phases") or {}
    # At most 9 columns with the VM: the report prints one row a job (more: one column a job).
    return {
        "step": step,
        "job_id": done["job_id"],
        "wall_s": round(wall_s, 3),
        "worker_total_s": timings.get("total_s"),
        "environment_s": timings.get("environment_s"),
        "downloaded": timings.get("environment_downloaded"),
        "execution_s": timings.get("execution_s"),
        "claimed_to_env_ready_s": _seconds(
            phases.get("claimed_at"), phases.get("environment_ready_at")
        ),
    }


def _build_row(client: ApiClient, pack: str) -> tuple[str, dict[str, Any]]:
    began = time.monotonic()
    env = client.create_environment([pack])
    built = client.wait_environment(env["id"], timeout_s=BUILD_TIMEOUT_S, poll_s=0.3)
    wall_s = time.monotonic() - began
    if built.get("state") != "ready":
        raise RuntimeError(f"the build failed: {built.get('error')}")
    job = client.get(build_job_id(env["id"]))  # the build job's own receipt
    timings = job.get("worker_timings") or {}
    return env["id"], {
        "step": "build (POST to ready)",
        "job_id": job["job_id"],
        "wall_s": round(wall_s, 3),
        "worker_total_s": timings.get("total_s"),
        "execution_s": timings.get("execution_s"),
    }


def _settings(root: Path, hostport: str) -> dict[str, str]:
    wheels = make_wheelhouse(root / "wheels")
    os.environ["PIP_CONFIG_FILE"] = os.devnull
    base_python = make_base_venv(root / "base", wheels)
    return {
        "COMFYBURST_HTTP_MODEL_HOSTS": hostport,
        "COMFYBURST_CUSTOM_NODE_SOURCES": f"{hostport}/owner",
        "COMFYBURST_TRUSTED_CUSTOM_NODE_SOURCES": f"{hostport}/owner",
        # The VM builds as its own (only) user, from the wheels made here.
        "COMFYBURST_WORKER_ENV_BASE_PYTHON": str(base_python),
        "COMFYBURST_WORKER_ENV_BUILD_UNISOLATED": "true",
        "COMFYBURST_WORKER_ENV_PIP_ARGS": " ".join(pip_args(wheels)),
        "PIP_CONFIG_FILE": os.devnull,
    }


def run(pool_size: int, rounds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="bench-environments-"))
    try:
        return _run(root, pool_size, rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, pool_size: int, rounds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rng = random.Random(24)
    plain = {"workflow": workflow(rng, slow=False), "options": {"timeout_s": 240}}
    with git_http_server(root / "served") as hostport:
        pack = serve_pack(root / "served", hostport, root / "work", "bench-pack", init_text=PACK)
        config = cloud_config(
            root / "cloud", pool_size=pool_size, settings_env=_settings(root, hostport)
        )
        with running_cloud(config) as cloud:
            client = ApiClient(ClientSettings(api_url=cloud.env["COMFYBURST_API_URL"], auth="none"))
            vms = range(pool_size)
            with ThreadPoolExecutor(pool_size) as pool:  # boots every VM: later jobs find them up
                rows = list(pool.map(lambda _: _job_row("no env, warm-up", client, plain), vms))
            rows += [_job_row("no env, baseline", client, plain) for _ in range(rounds)]
            env_id, build = _build_row(client, pack)
            rows.append(build)
            graph = {
                "1": {"class_type": NODE, "inputs": {"value": 21}},
                "2": {"class_type": SHOW, "inputs": {"value": ["1", 0]}},
            }
            in_env = {"workflow": graph, "options": {"timeout_s": 240, "environment": env_id}}
            rows += [_job_row("env", client, in_env) for _ in range(2 * pool_size + 1)]
            rows.append(_job_row("no env, after env", client, plain))
            observer = Observer(cloud.env)
            try:
                docs = observer.jobs()
            finally:
                observer.close()
    for row in rows:  # the job view does not name the VM; its document does
        row["vm"] = (docs.get(row.pop("job_id"), {}).get("vm") or {}).get("name")
    return rows, _summary(rows, pool_size)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _summary(rows: list[dict[str, Any]], pool_size: int) -> dict[str, Any]:
    """What each job actually met (which VM, whether it downloaded), not what it was meant to:
    placement decides which VM a job gets."""
    base = _median([r["wall_s"] for r in rows if r["step"] == "no env, baseline"])
    firsts = [r for r in rows if r["step"] == "env" and r["downloaded"]]
    loaded = [r for r in rows if r["step"] == "env" and r["downloaded"] is False]
    after = [r for r in rows if r["step"] == "no env, after env"]
    build = next(r for r in rows if r["step"].startswith("build"))
    meta: dict[str, Any] = {
        "pool_size": pool_size,
        "baseline_wall_s_median": base,
        "build_wall_s": build["wall_s"],
        "build_execution_s": build["execution_s"],
        "vms_that_downloaded": sorted({r["vm"] for r in firsts}),
    }
    for row in firsts:
        meta[f"first_job_on_{row['vm']}_environment_s"] = row["environment_s"]
    meta["first_job_environment_s_median"] = _median([r["environment_s"] for r in firsts])
    meta["loaded_job_environment_s_median"] = _median([r["environment_s"] for r in loaded])
    if base is not None:
        meta["first_job_extra_wall_s_vs_baseline"] = _extra([r["wall_s"] for r in firsts], base)
        meta["loaded_job_extra_wall_s_vs_baseline"] = _extra([r["wall_s"] for r in loaded], base)
        # A job without an environment after one: ComfyUI restarts to the base, which its
        # receipt counts as environment_s (environment_downloaded false).
        meta["no_env_after_env_extra_wall_s_vs_baseline"] = _extra(
            [r["wall_s"] for r in after], base
        )
    return meta


def _extra(values: list[float], base: float) -> float | None:
    median = _median(values)
    return None if median is None else round(median - base, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="baseline jobs")
    args = parser.parse_args()
    rows, meta = run(args.pool_size, args.rounds)
    write_report("environments", rows, meta)


if __name__ == "__main__":
    main()
