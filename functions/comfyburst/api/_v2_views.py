"""Comfy API v2 bodies from our one job model: the job, a list item, an output as an asset.

The pinned comfy-sdk's generated models are the contract. Our states map onto v2's as:
queued/starting -> queued; running -> running (canceling once a cancel was asked);
succeeded -> succeeded; cancelled -> canceled; failed -> failed; timed_out -> expired.
An output is an asset whose id names its job and its place in the job's outputs, so no
second record exists: `out-<n>-<job_id>`, resolved through the job (and its tenancy rule).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from comfyburst.api._v2_models import (
    OutputType,
    V2Asset,
    V2Job,
    V2JobError,
    V2JobListItem,
    V2JobUrls,
    V2Output,
    V2Progress,
    V2Status,
)
from comfyburst.domain.ops_metrics import PHASES, phase_seconds
from comfyburst.schema import Job, OutputFile
from comfyburst.states import JobState

PREFIX = "/api/v2"
_ASSET_ID = re.compile(r"^out-(?P<index>[0-9]{1,4})-(?P<job_id>[A-Za-z0-9_-]{1,64})$")

_STATUS: dict[JobState, V2Status] = {
    JobState.QUEUED: "queued",
    JobState.STARTING: "queued",  # a VM is booting for it: it has not started to run
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "succeeded",
    JobState.CANCELLED: "canceled",
    JobState.FAILED: "failed",
    JobState.TIMED_OUT: "expired",
}


def v2_status(job: Job) -> V2Status:
    """The v2 status of a job: a live job whose cancel was asked is `canceling`."""
    if job.cancel_requested and not job.state.terminal:
        return "canceling"
    return _STATUS[job.state]


def asset_id(job_id: str, index: int) -> str:
    return f"out-{index}-{job_id}"


def parse_asset_id(value: str) -> tuple[str, int] | None:
    """(job_id, output index) of an output asset id; None for anything else."""
    found = _ASSET_ID.match(value)
    if found is None:
        return None
    return found["job_id"], int(found["index"])


def output_type(content_type: str, animated: bool = False) -> OutputType:
    """v2's normalized kind of an output: ComfyUI's `animated` flag, else its content type."""
    if animated:
        return "video"  # an animated WEBP/PNG is `image/*` by type, frames of a video by intent
    major = content_type.split("/", 1)[0].lower()
    kinds: dict[str, OutputType] = {"image": "image", "video": "video", "audio": "audio"}
    return kinds.get(major, "text" if major == "text" else "file")


def job_body(job: Job) -> dict[str, Any]:
    """The v2 `Job` object (GET /api/v2/jobs/{id}, POST /api/v2/jobs, .../cancel)."""
    base = f"{PREFIX}/jobs/{job.job_id}"
    return V2Job(
        id=job.job_id,
        status=v2_status(job),
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.finished_at if job.state.terminal else None,
        expires_at=expires_at(job),
        queue_position=None,
        progress=_progress(job),
        outputs=[_output(job, i, o) for i, o in enumerate(job.outputs) if o.signed_url],
        error=_error(job),
        metrics=_metrics(job),
        # Host-relative, with the mount prefix: the SDK resolves them against the origin.
        urls=V2JobUrls(self=base, events=f"{base}/events", cancel=f"{base}/cancel"),
        metadata=dict(job.labels),
    ).model_dump(mode="json")


def list_item(job: Job) -> dict[str, Any]:
    """A `GET /api/v2/jobs` item: the lighter shape (no outputs, no links)."""
    return V2JobListItem(
        id=job.job_id,
        status=v2_status(job),
        create_time=job.created_at,
        update_time=job.state_changed_at,
        deployment_id=None,
        metadata=dict(job.labels),
    ).model_dump(mode="json")


def asset_body(
    job: Job, index: int, output: OutputFile, url: str, expires: datetime
) -> dict[str, Any]:
    """The v2 `Asset` of one output, with the given (fresh) signed URL."""
    return V2Asset(
        id=asset_id(job.job_id, index),
        # We keep a sha256, not v2's blake3: the contract lets `hash` be null.
        hash=None,
        size_bytes=output.size_bytes,
        content_type=output.content_type,
        file_path=output.name,
        created_at=job.finished_at or job.created_at,
        url=url,
        url_expires_at=expires,
        expires_at=expires_at(job),
        job_id=job.job_id,
    ).model_dump(mode="json")


def expires_at(job: Job) -> datetime:
    """When the job document goes (its Firestore TTL); its deadline for an old document."""
    return job.expire_at or job.deadline_at


def _output(job: Job, index: int, output: OutputFile) -> V2Output:
    # Outputs stored before the worker recorded the node: with one output node it is that node.
    outputs = job.accepted_outputs
    node_id = output.node_id or (outputs[0] if len(outputs) == 1 else "")
    return V2Output(
        node_id=node_id,
        name=output.name,
        type=output_type(output.content_type, output.animated),
        content_type=output.content_type,
        size_bytes=output.size_bytes,
        id=asset_id(job.job_id, index),
        hash=None,
        url=output.signed_url or "",
        url_expires_at=output.signed_url_expires_at or job.created_at,
        job_id=job.job_id,
    )


def _progress(job: Job) -> V2Progress | None:
    if job.state is not JobState.RUNNING:
        return None
    p = job.progress
    total = job.request.node_count
    return V2Progress(
        value=p.fraction,
        # We track the whole-workflow fraction, not a node count: nodes_done derives from it.
        nodes_done=min(total, int(p.fraction * total)),
        nodes_total=total,
        current_node=p.node,
        step=p.value if p.max else None,
        steps=p.max or None,
    )


def _error(job: Job) -> V2JobError | None:
    if job.error is None or job.state not in (JobState.FAILED, JobState.TIMED_OUT):
        return None
    return V2JobError(
        code=job.error.type,
        message=job.error.message,
        node_id=job.error.node_id,
        class_type=job.error.node_type,
    )


def _metrics(job: Job) -> dict[str, int | None]:
    """Queue, boot and execution, then each cold-start phase of the run (`<phase>_ms`, null
    for a phase the run skipped or before the job ends; domain/ops_metrics.py names them)."""
    started = job.started_at
    spans = phase_seconds(job.phases)
    return {
        "queue_ms": _ms(job.created_at, job.dispatched_at or started),
        "boot_ms": _ms(job.dispatched_at, started),
        "execution_ms": _ms(started, job.finished_at),
        **{f"{name}_ms": _phase_ms(spans.get(name)) for name in PHASES},
    }


def _phase_ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start) / timedelta(milliseconds=1)))
