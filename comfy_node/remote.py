"""Run one job on the ComfyBurst API from inside a node: submit, follow, cancel, fetch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._vendor.comfyburst_core.client import ApiClient, ApiError
from ._vendor.comfyburst_core.schema import check_relative_path
from .environments import (
    EnvironmentRefused,
    EnvironmentWaitCancelled,
    environment_for,
    wait_ready,
)
from .missing_nodes import BAKE_ADVICE, describe_missing, local_pack, missing_node_types
from .previews import PreviewPoller, Show

PROGRESS_STEPS = 1000


class RemoteJobError(RuntimeError):
    """The remote job could not run; the message names the remote node and ComfyUI's words."""


class RemoteJobCancelled(RuntimeError):
    """The remote job was cancelled (from ComfyUI or elsewhere)."""


@dataclass
class RemoteResult:
    job: dict[str, Any]
    images: list[tuple[str, bytes]] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)


def describe_rejection(exc: ApiError) -> str:
    """A pre-flight or request rejection as one readable message, node by node."""
    head = f"ComfyBurst rejected the workflow ({exc.status} {exc.code}): {exc.message}"
    return "\n".join([head, *exc.node_error_lines()])


def describe_failure(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    where = ""
    if error.get("node_id"):
        where = f" on remote node {error['node_id']}"
        if error.get("node_type"):
            where += f" ({error['node_type']})"
    return (
        f"ComfyBurst job {job.get('job_id')} {job.get('state')}{where}: "
        f"{error.get('message') or 'no details'}"
    )


def run_job(
    client: ApiClient,
    request: dict[str, Any],
    *,
    is_image: Callable[[str], bool],
    on_progress: Callable[[int], None] = lambda value: None,
    interrupted: Callable[[], bool] = lambda: False,
    poll_s: float = 0.5,
    on_preview: Show | None = None,
    on_status: Callable[[str], None] = lambda message: None,
) -> RemoteResult:
    """Wait for the request's environment (`on_status` told how its build goes), submit, follow
    with progress (0..PROGRESS_STEPS) and live previews (`on_preview`), cancel remotely when
    `interrupted`, and fetch every output.

    Node types the GPU image lacks are brought by the environment of their local packs, asked
    for here when the request names none."""
    environment = (request.get("options") or {}).get("environment")
    if environment:
        _wait_environment(client, str(environment), on_status, interrupted)
    try:
        job = client.submit(request)
    except ApiError as exc:
        missing = missing_node_types(client.validate, request, exc.comfy_error)
        if not missing:
            raise RemoteJobError(describe_rejection(exc)) from exc
        if environment:
            advice = f"The GPU environment {environment} does not bring them either. {BAKE_ADVICE}"
            raise RemoteJobError(describe_missing(missing, local_pack, advice)) from exc
        try:
            env = environment_for(client, missing, local_pack)
        except EnvironmentRefused as refused:
            raise RemoteJobError(describe_missing(missing, local_pack, str(refused))) from exc
        request = {
            **request,
            "options": {**(request.get("options") or {}), "environment": env["id"]},
        }
        return run_job(
            client,
            request,
            is_image=is_image,
            on_progress=on_progress,
            interrupted=interrupted,
            poll_s=poll_s,
            on_preview=on_preview,
            on_status=on_status,
        )

    previews = PreviewPoller(client, job["job_id"], on_preview) if on_preview else None

    def update(current: dict[str, Any]) -> None:
        fraction = float((current.get("progress") or {}).get("fraction") or 0.0)
        value = int(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS)
        on_progress(value)
        if previews is not None:
            previews(current, value)

    job = client.wait(job["job_id"], poll_s=poll_s, on_update=update, should_cancel=interrupted)
    if job.get("state") == "cancelled":
        raise RemoteJobCancelled(f"ComfyBurst job {job.get('job_id')} was cancelled")
    if job.get("state") != "succeeded":
        raise RemoteJobError(describe_failure(job))
    on_progress(PROGRESS_STEPS)
    result = RemoteResult(job=job)
    for output in job.get("outputs") or []:
        url = output.get("signed_url")
        if not url:
            raise RemoteJobError(f"output {output.get('name')} of {job['job_id']} has no URL")
        try:
            # Outputs that share a bare file name come as `subfolder/name`: keep it, checked
            # again here so a name can never leave the folder it is saved in.
            name = check_relative_path(str(output["name"]), allow_subdirs=True)
        except ValueError as exc:
            raise RemoteJobError(f"output name {output['name']!r} refused: {exc}") from exc
        target = result.images if is_image(name) else result.files
        target.append((name, client.fetch(url)))
    return result


def _wait_environment(
    client: ApiClient,
    environment_id: str,
    on_status: Callable[[str], None],
    interrupted: Callable[[], bool],
) -> None:
    """Return once the environment is ready; its refusal or Cancel as this module's errors."""
    try:
        wait_ready(client, environment_id, on_status=on_status, interrupted=interrupted)
    except EnvironmentRefused as exc:
        raise RemoteJobError(str(exc)) from exc
    except EnvironmentWaitCancelled as exc:
        raise RemoteJobCancelled(str(exc)) from exc
