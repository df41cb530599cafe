"""`comfyburst`: submit, follow, cancel jobs; watch results; run the local cloud."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from comfyburst.client import ApiClient
from comfyburst.schema import check_relative_path
from comfyburst_cli._api import api_client as _client
from comfyburst_cli._api import use_local_env as _use_local_env
from comfyburst_cli._errors import CliError, cli_errors
from comfyburst_cli.environments import env_app
from comfyburst_cli.image_nodes import image_app
from comfyburst_cli.requests_builder import load_request
from comfyburst_cli.usage import usage

app = typer.Typer(
    help="ComfyBurst: render ComfyUI workflows on GPUs that exist only while there is work."
)
local_app = typer.Typer(help="The local cloud: emulators, Compute stand-in, functions, workers.")
app.add_typer(local_app, name="local")
app.add_typer(image_app, name="image")
app.add_typer(env_app, name="env")
app.command("usage")(usage)
console = Console()
# Help texts are Rich markup: anything with brackets in it goes through `escape`.
MODEL_HELP = "A model the job needs: KIND[/FILENAME]=URL[#sha256=HEX] (repeatable)"


def _show(job: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("job_id", "state", "attempt", "queued_reason"):
        if job.get(key) is not None:
            table.add_row(key, str(job[key]))
    if job.get("vm"):
        table.add_row("vm", f"{job['vm'].get('name')} ({job['vm'].get('zone')})")
    if job.get("timings"):
        table.add_row("timings", json.dumps(job["timings"]))
    if job.get("error"):
        table.add_row("error", json.dumps(job["error"]))
    for out in job.get("outputs") or []:
        table.add_row(
            "output", f"{out.get('name')} {out.get('size_bytes')} B {out.get('signed_url')}"
        )
    console.print(table)


def _follow(client: ApiClient, job_id: str) -> dict[str, Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"{job_id} queued", total=1.0)

        def update(job: dict[str, Any]) -> None:
            fraction = (job.get("progress") or {}).get("fraction") or 0.0
            progress.update(task, completed=fraction, description=f"{job_id} {job.get('state')}")

        return client.wait(job_id, on_update=update)


def _save_outputs(client: ApiClient, job: dict[str, Any], out_dir: Path) -> None:
    """Each output under `out_dir` by its name (`subfolder/name` where two share a bare name;
    checked so that no name leaves the folder)."""
    for out in job.get("outputs") or []:
        if not out.get("signed_url"):
            continue
        try:
            name = check_relative_path(str(out.get("name")), allow_subdirs=True)
        except ValueError as exc:
            raise CliError(f"output name {out.get('name')!r} refused: {exc}") from exc
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        size = client.download(out["signed_url"], str(target))
        console.print(Text(f"saved {target} ({size} bytes)"))


@app.command()
def submit(
    workflow: Annotated[
        Path, typer.Argument(help="API-format workflow JSON, or a whole job request")
    ],
    model: Annotated[list[str], typer.Option(help=escape(MODEL_HELP))] = [],  # noqa: B006
    input: Annotated[
        list[Path], typer.Option(help="An input image (LoadImage uses its name)")
    ] = [],  # noqa: B006
    timeout_s: Annotated[int | None, typer.Option(help="Job deadline in seconds")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job to its end")] = False,
    out: Annotated[Path | None, typer.Option(help="With --wait: save outputs here")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Repeat-safe submit key")] = None,
    gpu_class: Annotated[
        str | None, typer.Option(help="The GPU class to run on (see `comfyburst gpu-classes`)")
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(help="Run in this environment of custom-node packs (`comfyburst env list`)"),
    ] = None,
) -> None:
    """Submit a workflow."""
    with cli_errors():
        request = load_request(workflow, model, input, timeout_s, gpu_class, environment)
        client = _client()
        job = client.submit(request, idempotency_key)
        if wait:
            job = _follow(client, job["job_id"])
            if out is not None:
                _save_outputs(client, job, out)
    _show(job)
    if wait and job.get("state") != "succeeded":
        raise typer.Exit(1)


def warm_line(cls: dict[str, Any]) -> str:
    """A class's warm schedule and what it costs a week (the API's `warm_cost_per_week`)."""
    windows = cls.get("warm") or []
    if not windows:
        return "-"
    parts = [
        f"{w.get('days')} {w.get('from')}-{w.get('to')} {w.get('time_zone', 'UTC')} x{w.get('vms')}"
        for w in windows
    ]
    return f"{'; '.join(parts)}: ${float(cls.get('warm_cost_per_week') or 0):.2f}/week"


@app.command("gpu-classes")
def gpu_classes(
    as_json: Annotated[bool, typer.Option("--json", help="The API's answer as JSON")] = False,
) -> None:
    """List the GPU classes a job may ask for (--gpu-class)."""
    with cli_errors():
        answer = _client().gpu_classes()
    if as_json:
        typer.echo(json.dumps(answer))
        return
    table = Table("name", "accelerator", "spot", "price/hour", "regions", "warm", "")
    for cls in answer.get("gpu_classes") or []:
        accelerator = f"{cls.get('accelerator_count', 0)} x {cls.get('accelerator_type') or '?'}"
        marks = [m for m, on in (("default", cls.get("default")),) if on]
        if cls.get("name") == answer.get("preemption_fallback"):
            marks.append("preemption fallback")
        table.add_row(
            escape(str(cls.get("name", ""))),
            escape(accelerator),
            "yes" if cls.get("spot") else "no",
            f"${float(cls.get('price_per_hour') or 0):.4f}",
            escape(", ".join(cls.get("regions") or [])),
            escape(warm_line(cls)),
            ", ".join(marks),
        )
    console.print(table)


@app.command()
def status(job_id: str, wait: bool = False, out: Path | None = None) -> None:
    """Show a job (and follow it with --wait)."""
    with cli_errors():
        client = _client()
        job = _follow(client, job_id) if wait else client.get(job_id)
        if out is not None:
            _save_outputs(client, job, out)
    _show(job)


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job."""
    with cli_errors():
        job = _client().cancel(job_id)
    _show(job)


@app.command()
def jobs(
    state: Annotated[list[str], typer.Option(help="Only jobs in this state (repeatable)")] = [],  # noqa: B006
    limit: Annotated[int, typer.Option(help="Show at most this many jobs", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON job per line")] = False,
) -> None:
    """List your jobs, newest first."""
    shown: list[dict[str, Any]] = []
    with cli_errors():
        client = _client()
        token: str | None = None
        while len(shown) < limit:
            page = client.list_jobs(
                states=state or None, page_size=min(limit - len(shown), 100), page_token=token
            )
            shown += page.get("jobs") or []
            token = page.get("next_page_token")
            if not token:
                break
    if as_json:
        for job in shown[:limit]:
            typer.echo(json.dumps(job))
        return
    table = Table("job_id", "state", "created_at", "attempt", "outputs")
    for job in shown[:limit]:
        table.add_row(
            job.get("job_id", ""),
            job.get("state", ""),
            str(job.get("created_at", "")),
            str(job.get("attempt", "")),
            str(len(job.get("outputs") or [])),
        )
    console.print(table)
    if token:
        console.print(f"(more: --limit {limit * 2})")


@app.command()
def watch(
    subscription: Annotated[
        str | None,
        typer.Argument(help="projects/P/subscriptions/S, or S in COMFYBURST_PROJECT_ID"),
    ] = None,
    max_messages: Annotated[int | None, typer.Option(help="Stop after this many results")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
) -> None:
    """Print each result message as it arrives on a subscription."""
    from comfyburst_cli.watch import subscription_path
    from comfyburst_cli.watch import watch as run_watch

    _use_local_env("COMFYBURST_RESULTS_SUBSCRIPTION")
    with cli_errors():
        name = subscription or os.environ.get("COMFYBURST_RESULTS_SUBSCRIPTION")
        if not name:
            raise CliError("give a subscription or set COMFYBURST_RESULTS_SUBSCRIPTION")
        project = os.environ.get("COMFYBURST_PROJECT_ID") or os.environ.get("GOOGLE_CLOUD_PROJECT")
        run_watch(subscription_path(name, project), max_messages=max_messages, timeout_s=timeout_s)


@local_app.command("up")
def local_up() -> None:
    """Start the local cloud and write .localcloud/env."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "localcloud", "up"]))


@local_app.command("down")
def local_down() -> None:
    """Stop everything the local cloud started."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "localcloud", "down"]))


if __name__ == "__main__":
    app()
