"""`make demo` / `python -m localcloud.scenarios.demo`: one job through the local cloud, narrated.

Brings up the local cloud, submits a sample workflow through the API client, shows the VM
booting, the worker's progress and the result (timings, signed URLs, output files saved under
./demo-output/, the Pub/Sub result message), then tears everything down, also on Ctrl-C.
With COMFYUI_DIR set (a ComfyUI checkout with its venv), the local cloud starts that real
ComfyUI on the folders the VMs' workers use and the VMs drive it instead of the stand-in; with
COMFYUI_URL, a ComfyUI you run, which must use those folders (the demo says how, if not).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from localcloud import real_comfyui
from localcloud.config import REPO_ROOT, RealComfyUI
from localcloud.scenarios.harness import Observer, cloud_config, running_cloud

DEFAULT_WORKFLOW = REPO_ROOT / "examples" / "workflows" / "invert.json"
console = Console()


# The folders a ComfyUI the user runs (COMFYUI_URL) shares with the VMs: the same every run.
USER_COMFYUI_ROOT = REPO_ROOT / ".localcloud" / "comfyui"


def _real_comfyui(state_dir: Path) -> RealComfyUI | None:
    root = state_dir / "comfyui" if os.environ.get("COMFYUI_DIR") else USER_COMFYUI_ROOT
    return real_comfyui.from_env(root)


def _banner(comfyui: RealComfyUI | None) -> None:
    if comfyui is not None and comfyui.directory is not None:
        console.print(
            Panel(
                f"The local cloud starts the real ComfyUI in [bold]{comfyui.directory}[/bold] "
                f"(folders under {comfyui.root}); the VMs drive it.",
                style="green",
            )
        )
    elif comfyui is not None:
        console.print(
            Panel(f"VMs drive the real ComfyUI at [bold]{comfyui.url}[/bold]", style="green")
        )
    else:
        console.print(
            Panel(
                "Neither COMFYUI_DIR nor COMFYUI_URL is set: every VM runs the "
                "[bold]ComfyUI STAND-IN[/bold] (not ComfyUI; image-only core nodes, same "
                "HTTP/websocket protocol).\nSet COMFYUI_DIR=/path/to/ComfyUI (a checkout with "
                "its venv) and the local cloud starts that real ComfyUI for the VMs.",
                title="ComfyUI stand-in in use",
                style="yellow",
            )
        )


def load_request(path: Path, inputs: list[Path] | None = None) -> dict[str, Any]:
    """A job request from a workflow file (API format) or a whole request JSON (+ images)."""
    body = json.loads(path.read_text())
    request = body if "workflow" in body else {"workflow": body}
    request.setdefault("inputs", []).extend(
        {"name": p.name, "data_b64": base64.b64encode(p.read_bytes()).decode()}
        for p in inputs or []
    )
    request.setdefault("options", {}).setdefault("timeout_s", 600)
    return request


def _follow(client: Any, observer: Observer, job_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll the job and the VM until the job is terminal, showing both."""
    seen_vm: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("queued", total=1.0)
        while True:
            job = client.get(job_id)
            for vm in observer.instances():
                if seen_vm.get(vm["name"]) != vm["status"] and (
                    vm["name"] in seen_vm or vm["status"] != "TERMINATED"
                ):
                    bar.console.print(
                        f"  VM [cyan]{vm['name']}[/cyan] ({vm['zone']}): {vm['status']}"
                    )
                seen_vm[vm["name"]] = vm["status"]
            progress = job.get("progress") or {}
            node = f" node {progress['node']}" if progress.get("node") else ""
            bar.update(
                task, completed=progress.get("fraction") or 0.0, description=f"{job['state']}{node}"
            )
            if job["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s:.0f} s")
            time.sleep(0.3)


def _show_result(client: Any, job: dict[str, Any], out_dir: Path) -> None:
    colour = "green" if job["state"] == "succeeded" else "red"
    console.print(f"\njob [bold]{job['job_id']}[/bold]: [{colour}]{job['state']}[/{colour}]")
    if job.get("error"):
        console.print(f"[red]error:[/red] {json.dumps(job['error'])}")
    receipt = Table(title="timings receipt (s)")
    for column in ("queued", "boot", "run", "total"):
        receipt.add_column(column, justify="right")
    t = job.get("timings") or {}
    receipt.add_row(*(f"{t.get(k + '_s') or 0:.2f}" for k in ("queued", "boot", "run", "total")))
    console.print(receipt)
    if job.get("worker_timings"):
        worker = Table(title="worker timings (s)")
        keys = ("claim_s", "model_fetch_s", "queue_wait_s", "execution_s", "upload_s", "gpu_s")
        for key in keys:
            worker.add_column(key.removesuffix("_s"), justify="right")
        worker.add_row(*(f"{job['worker_timings'].get(k, 0):.3f}" for k in keys))
        console.print(worker)
    out_dir.mkdir(parents=True, exist_ok=True)
    for output in job.get("outputs") or []:
        target = out_dir / Path(output["name"]).name
        size = client.download(output["signed_url"], str(target))
        console.print(f"output [bold]{output['name']}[/bold] ({size} B) -> {target}")
        console.print(f"  signed URL: [dim]{output['signed_url'][:110]}…[/dim]")


def _show_message(observer: Observer, job_id: str) -> None:
    messages = observer.pull_results(idle_s=1.0, max_s=20.0)
    mine = [m for m in messages if m["attributes"].get("job_id") == job_id]
    if not mine:
        console.print("[red]no result message on the results subscription[/red]")
        return
    body = json.loads(mine[0]["data"])
    for output in body.get("outputs", []):
        output["signed_url"] = (output.get("signed_url") or "")[:60] + "…"
    console.print(
        Panel(
            json.dumps(body, indent=2),
            title=f"Pub/Sub result message (attributes {mine[0]['attributes']})",
        )
    )


def run(workflow: Path, out_dir: Path, timeout_s: float, inputs: list[Path] | None = None) -> int:
    """The whole demo; returns the exit code."""
    from comfyburst.client import ApiClient, ClientSettings

    request = load_request(workflow, inputs)
    state_dir = Path(tempfile.mkdtemp(prefix="comfyburst-demo-"))
    comfyui = _real_comfyui(state_dir)
    _banner(comfyui)
    console.print(f"starting the local cloud (state and logs in {state_dir}) …")
    config = cloud_config(state_dir, pool_size=2)
    if comfyui is not None:  # one ComfyUI, one set of folders: one VM at a time
        config = replace(config, comfyui=comfyui, pool_size=1)
    with running_cloud(config) as cloud:
        console.print(
            f"[green]local cloud up[/green] in {cloud.startup_s:.1f} s: "
            + ", ".join(s.name for s in cloud.services)
        )
        if cloud.comfyui_advice:
            console.print(Panel(cloud.comfyui_advice, title="ComfyUI folders", style="red"))
            return 2
        client = ApiClient(ClientSettings(api_url=cloud.env["COMFYBURST_API_URL"], auth="none"))
        observer = Observer(cloud.env)
        try:
            job = client.submit(request)
            console.print(
                f"submitted [bold]{workflow.name}[/bold]: job {job['job_id']} ({job['state']})"
            )
            job = _follow(client, observer, job["job_id"], timeout_s)
            _show_result(client, job, out_dir)
            _show_message(observer, job["job_id"])
            up = observer.wait_all_terminated(timeout_s=30)
            console.print(
                "every VM is TERMINATED again" if not up else f"[red]still up:[/red] {up}"
            )
        finally:
            observer.close()
            console.print("tearing the local cloud down …")
    console.print("[green]done[/green]; nothing left running.")
    return 0 if job["state"] == "succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.scenarios.demo", description=__doc__
    )
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW)
    parser.add_argument("--input", type=Path, action="append", help="an input image (LoadImage)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--timeout-s", type=float, default=180.0)
    args = parser.parse_args(argv)
    try:
        return run(args.workflow, args.out, args.timeout_s, args.input)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the local cloud was stopped[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
