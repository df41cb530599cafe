"""Driving ComfyUI, prompt posted → every output in hand: the agent's comfy client (ComfyClient +
WsFollower + RunTracker + throttled progress, as `JobRunner` uses them) against a bare
HTTP + websocket client doing only that (POST /prompt with client_id, read the socket until
`executing` with node null, GET /history, GET /view of each output). Same workflow, same
server, alternated run by run.

Overhead = wall time - ComfyUI's own execution time (the `/history` status messages'
execution_start → execution_success timestamps, milliseconds). Target: ours <= 1.3x bare (p50).

Run: `.venv/bin/python -m tests.bench.bench_comfy_drive [--runs 60] [--comfyui-url URL]`
(default: the ComfyUI stand-in, started in-process).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import websocket

from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.outputs import output_refs
from comfyburst_worker.progress import ProgressWriter
from comfyburst_worker.run_tracker import Outcome, RunTracker
from comfyburst_worker.ws_follower import WsFollower
from tests.bench._report import write_report


def _workflow(prefix: str) -> dict[str, Any]:
    # A fresh colour each run: ComfyUI caches node outputs across identical prompts.
    colour = random.randrange(0, 1 << 24)
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": colour},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def _exec_ms(entry: dict[str, Any]) -> float:
    stamps = {m[0]: m[1].get("timestamp") for m in entry["status"]["messages"]}
    return float(stamps["execution_success"] - stamps["execution_start"])


class Bare:
    """The least a client must do; one keep-alive session and one socket, like ours."""

    def __init__(self, url: str) -> None:
        self.url, self.client_id = url, f"bare-{uuid.uuid4().hex[:8]}"
        self.http = requests.Session()
        self.http.trust_env = False
        ws_url = url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self.ws = websocket.create_connection(ws_url)

    def run(self, workflow: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        body = {"prompt": workflow, "client_id": self.client_id}
        prompt_id = self.http.post(f"{self.url}/prompt", json=body).json()["prompt_id"]
        while True:
            raw = self.ws.recv()
            if not isinstance(raw, str):
                continue
            msg = json.loads(raw)
            data = msg.get("data") or {}
            if (
                msg.get("type") == "executing"
                and data.get("prompt_id") == prompt_id
                and data.get("node") is None
            ):
                break
        entry = self.http.get(f"{self.url}/history/{prompt_id}").json()[prompt_id]
        files = []
        for node in entry["outputs"].values():
            for image in node.get("images", []):
                params = {k: image[k] for k in ("filename", "subfolder", "type")}
                files.append(self.http.get(f"{self.url}/view", params=params).content)
        return entry, files

    def close(self) -> None:
        self.ws.close()


class Ours:
    """What `JobRunner._execute` + the output collector's reads do, minus store writes."""

    def __init__(self, url: str) -> None:
        self.comfy = ComfyClient(url)
        self.follower = WsFollower(self.comfy, f"ours-{uuid.uuid4().hex[:8]}")

    def run(self, workflow: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        prompt_id = str(uuid.uuid4())
        tracker = RunTracker(prompt_id=prompt_id, node_count=len(workflow))
        self.follower.ensure_connected()
        answer = self.comfy.post_prompt(workflow, self.follower.client_id, prompt_id)
        assert answer.status == 200 and not answer.body.get("node_errors"), answer.body
        writer = ProgressWriter(lambda _p: None, 1.0)
        try:
            self.follower.follow(tracker, writer.submit, lambda: False)
        finally:
            writer.close(tracker.progress() if tracker.outcome is Outcome.SUCCESS else None)
        entry = self.follower.history_after(tracker)
        files = [
            self.comfy.view(r.filename, r.subfolder, r.folder_type)[0]
            for r in output_refs(entry.get("outputs") or tracker.outputs)
        ]
        return entry, files

    def close(self) -> None:
        self.follower.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _measure(client: Any, workflow: dict[str, Any], out: dict[str, list[float]], name: str) -> None:
    began = time.perf_counter()
    entry, files = client.run(workflow)
    wall_ms = (time.perf_counter() - began) * 1000
    assert files and all(f.startswith(b"\x89PNG") for f in files), "no PNG output"
    exec_ms = _exec_ms(entry)
    out[f"{name}_wall"].append(wall_ms)
    out[f"{name}_exec"].append(exec_ms)
    out[f"{name}_overhead"].append(wall_ms - exec_ms)


def bench(url: str, runs: int, warmup: int, label: str) -> list[dict[str, Any]]:
    ours, bare = Ours(url), Bare(url)
    samples: dict[str, list[float]] = {
        f"{n}_{k}": [] for n in ("ours", "bare") for k in ("wall", "exec", "overhead")
    }
    scratch: dict[str, list[float]] = {k: [] for k in samples}
    try:
        for i in range(warmup + runs):
            target = samples if i >= warmup else scratch
            pair: list[tuple[str, Callable[..., Any]]] = [("ours", ours), ("bare", bare)]  # type: ignore[list-item]
            if i % 2:
                pair.reverse()
            for name, client in pair:
                _measure(client, _workflow(f"comfyburst_bench/{name}"), target, name)
    finally:
        ours.close()
        bare.close()
    rows: list[dict[str, Any]] = []
    for name in ("bare", "ours"):
        over = samples[f"{name}_overhead"]
        rows.append(
            {
                "server": label,
                "client": name,
                "runs": runs,
                "overhead_p50_ms": round(statistics.median(over), 2),
                "overhead_p95_ms": round(_pct(over, 0.95), 2),
                "comfy_exec_p50_ms": round(statistics.median(samples[f"{name}_exec"]), 2),
                "wall_p50_ms": round(statistics.median(samples[f"{name}_wall"]), 2),
            }
        )
    bare_row, ours_row = rows
    ours_row["ratio_p50"] = round(ours_row["overhead_p50_ms"] / bare_row["overhead_p50_ms"], 3)
    ours_row["ratio_p95"] = round(ours_row["overhead_p95_ms"] / bare_row["overhead_p95_ms"], 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--comfyui-url", default=None, help="a real ComfyUI (default: stand-in)")
    args = parser.parse_args()
    standin = None
    if args.comfyui_url:
        url, label = args.comfyui_url.rstrip("/"), f"ComfyUI at {args.comfyui_url}"
        version = requests.get(f"{url}/system_stats", timeout=10).json()["system"]
        label = f"ComfyUI {version.get('comfyui_version')} (real)"
    else:
        from localcloud.comfyui_standin import StandinServer

        work = Path(tempfile.mkdtemp(prefix="bench-comfy-drive-"))
        standin = StandinServer(work / "in", work / "out", work / "tmp")
        url, label = standin.start(), "ComfyUI stand-in (in-process)"
    try:
        rows = bench(url, args.runs, args.warmup, label)
    finally:
        if standin is not None:
            standin.stop()
    name = "comfy_drive_real" if args.comfyui_url else "comfy_drive"
    meta = {
        "workflow": "EmptyImage 64x64 -> ImageInvert -> SaveImage, fresh colour per run",
        "overhead": "wall (POST /prompt .. last /view) - (execution_success - execution_start)",
        "target": "ours p50 <= 1.3x bare p50",
        "ratio_p50": rows[1]["ratio_p50"],
        "pass": rows[1]["ratio_p50"] <= 1.3,
    }
    write_report(name, rows, meta)


if __name__ == "__main__":
    main()
