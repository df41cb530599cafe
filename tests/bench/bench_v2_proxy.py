"""Comfy API v2 overhead: the same comfy-sdk loop (submit → terminal, the SDK's own `run`) against
comfy-api-proxy in front of one ComfyUI stand-in, and against the local cloud's warm VM, in one
run (issue #25, the benchmark).

Run: `.venv/bin/python -m tests.bench.bench_v2_proxy [--jobs 20]`.
The proxy (the pinned comfy-api-proxy, its own CLI, loopback, no token) is pointed at a ComfyUI
stand-in started in-process. The local cloud has one pool VM (stand-in ComfyUI, drain grace
60 s): a first job starts it, then each measured job finds it draining (warm: no create, no
boot). Each job is EmptyImage → ImageInvert → SaveImage with a fresh colour (no cached outputs).
Baseline, same run: the bare stand-in driven over ComfyUI's own protocol (bench_comfy_drive).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests._poll import poll_until
from tests.bench.bench_comfy_drive import Bare, _workflow

DRAIN_GRACE_S = 60.0
PROXY_READY_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_proxy(comfyui_url: str) -> tuple[subprocess.Popen[bytes], str]:
    """comfy-api-proxy's own CLI in the foreground on a free loopback port, once it answers."""
    port = _free_port()
    cli = Path(sys.executable).with_name("comfy-api-proxy")
    proc = subprocess.Popen(
        [str(cli), "--comfyui", comfyui_url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"comfy-api-proxy exited {proc.returncode}")
        try:
            return requests.get(f"{url}/api/v2/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        poll_until(ready, "comfy-api-proxy to answer", timeout_s=PROXY_READY_S, interval_s=0.1)
    except BaseException:
        proc.terminate()
        raise
    return proc, url


def _sdk_loop(base_url: str, label: str, jobs: int) -> tuple[list[float], int]:
    """Milliseconds of submit → terminal (`Comfy.submit`, then the SDK's own `Job.wait`, what
    `Comfy.run` does) per job after one warm-up job, and how many terminal answers were
    misread.

    comfy-api-proxy 0.1.6 reads ComfyUI's /history, then /queue: a job that finishes between
    the two reads is in neither and is answered `expired` (terminal) once; the next poll says
    `succeeded`. Such a job is re-read once (`Job.refresh`) and counted; it must then have
    succeeded."""
    from comfy_sdk import Comfy

    os.environ["COMFY_BASE_URL"] = base_url
    client = Comfy(api_key=None, timeout=60.0)
    misread = 0
    try:
        walls = []
        for i in range(-1, jobs):
            workflow = client.workflows.from_json(_workflow(f"bench-{label}-{i}"))
            t0 = time.perf_counter()
            job = client.submit(workflow).wait(timeout=240)
            if job.status == "expired":
                misread += 1
                job = job.refresh()
            wall = (time.perf_counter() - t0) * 1000
            if job.status != "succeeded" or len(job.outputs) != 1:
                raise RuntimeError(f"{label} {job.id}: {job.status}, {len(job.outputs)} outputs")
            if i >= 0:
                walls.append(wall)
        return walls, misread
    finally:
        client.close()


def _bare(url: str, jobs: int) -> list[float]:
    bare = Bare(url)
    try:
        return [_timed(lambda i=i: bare.run(_workflow(f"bench-bare-{i}"))) for i in range(jobs)]
    finally:
        bare.close()


def _timed(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def _row(name: str, values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]  # nearest rank
    return {
        "target (ms)": name,
        "p50": round(statistics.median(values), 1),
        "p95": round(p95, 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
        "n": len(values),
    }


def main(argv: list[str] | None = None) -> None:
    from localcloud.cloud import LocalCloud
    from localcloud.comfyui_standin import StandinServer
    from localcloud.scenarios.harness import cloud_config, warm_up
    from tests.bench._report import write_report

    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_v2_proxy")
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-v2-proxy-") as tmp:
        settings = {"COMFYBURST_DRAIN_GRACE_S": str(DRAIN_GRACE_S)}
        base = cloud_config(Path(tmp) / "cloud", pool_size=1, settings_env=settings)
        cloud = LocalCloud(base)
        standin = StandinServer(Path(tmp) / "in", Path(tmp) / "out", Path(tmp) / "tmp")
        comfyui_url = standin.start()
        proxy, proxy_url = _start_proxy(comfyui_url)
        try:
            via_proxy, proxy_misread = _sdk_loop(proxy_url, "proxy", args.jobs)
            bare = _bare(comfyui_url, args.jobs)
            cloud.start()
            env = dict(cloud.env)
            warm_up(env)
            via_cloud, cloud_misread = _sdk_loop(env["COMFYBURST_API_URL"], "cloud", args.jobs)
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
            standin.stop()
            cloud.stop()
    rows = [
        _row("comfy-sdk → comfy-api-proxy → stand-in", via_proxy),
        _row("comfy-sdk → local cloud /api/v2 (warm VM)", via_cloud),
        _row("bare stand-in (ComfyUI protocol, no SDK)", bare),
    ]
    proxy_p50, cloud_p50 = rows[0]["p50"], rows[1]["p50"]
    meta = {
        "command": f"python -m tests.bench.bench_v2_proxy --jobs {args.jobs}",
        "loop": "Comfy.submit, then Job.wait (what Comfy.run does), one job at a time",
        "backends": "comfy-api-proxy 0.1.6 + ComfyUI stand-in; local cloud (Firestore, Pub/Sub "
        "emulators, fake-gcs-server, functions framework, Eventarc stand-in), one pool VM",
        "proxy_p50_ms": proxy_p50,
        "cloud_warm_p50_ms": cloud_p50,
        "cloud_minus_proxy_p50_ms": round(cloud_p50 - proxy_p50, 1),
        "expired_then_succeeded (proxy, cloud)": f"{proxy_misread}, {cloud_misread}",
    }
    write_report("v2_proxy", rows, meta)


if __name__ == "__main__":
    main()
