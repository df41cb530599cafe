"""The API's public bodies: the job as callers see it, the pre-flight verdict, error bodies.

The job view leaves out what is internal: the VM, the caller, the stored idempotency key, the
TTL and the stored result message.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from comfyburst import SCHEMA_VERSION
from comfyburst.domain.environments import Environment, EnvironmentState
from comfyburst.domain.jobs import result_timings
from comfyburst.domain.receipts import shown_receipt
from comfyburst.schema import (
    Job,
    JobError,
    JobOptions,
    JobPhases,
    OutputFile,
    Progress,
    Receipt,
    RequestSummary,
    ResultTimings,
    WorkerTimings,
)
from comfyburst.states import JobState


class JobView(BaseModel):
    """A job as `POST /jobs`, `GET /jobs/{id}` and `POST /jobs/{id}:cancel` answer it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    state: JobState
    attempt: int
    max_attempts: int
    queued_reason: str | None = Field(default=None, description="Why a queued job waits.")
    cancel_requested: bool = False
    created_at: datetime
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime
    progress: Progress
    outputs: list[OutputFile] = Field(
        description="Outputs once succeeded, each with a signed URL valid for 5 minutes or more."
    )
    error: JobError | None = None
    timings: ResultTimings
    worker_timings: WorkerTimings | None = None
    phases: JobPhases | None = Field(default=None, description="When each step happened.")
    receipt: Receipt | None = Field(
        default=None, description="What the run cost; idle_after_s once its VM powered off."
    )
    request: RequestSummary
    options: JobOptions
    gpu_class: str | None = Field(default=None, description="The GPU class the job runs on.")
    gpu_class_reason: str | None = Field(
        default=None, description="Why it left the class it asked for (Spot preemptions)."
    )
    preflight_node_errors: dict[str, Any] = Field(
        default_factory=dict,
        description="ComfyUI-shaped errors of outputs that do not run; the valid ones do. "
        "Clipped to a bound (long values cut, marked '…(truncated)').",
    )
    preflight_node_errors_omitted: int = Field(
        default=0, description="Nodes whose errors did not fit the bound."
    )
    webhook_url: str | None = Field(default=None, description="Told of the terminal result.")

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            job_id=job.job_id,
            state=job.state,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            queued_reason=job.queued_reason if job.state is JobState.QUEUED else None,
            cancel_requested=job.cancel_requested,
            created_at=job.created_at,
            dispatched_at=job.dispatched_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            deadline_at=job.deadline_at,
            progress=job.progress,
            outputs=job.outputs,
            error=job.error,
            timings=result_timings(job),
            worker_timings=job.worker_timings,
            phases=job.phases,
            receipt=shown_receipt(job),
            request=job.request,
            options=job.options,
            gpu_class=job.gpu_class,
            gpu_class_reason=job.gpu_class_reason,
            preflight_node_errors=json.loads(job.preflight_node_errors_json or "{}"),
            preflight_node_errors_omitted=job.preflight_node_errors_omitted,
            webhook_url=job.webhook_url,
        )


class JobList(BaseModel):
    """`GET /jobs`: the caller's jobs, newest first (signed URLs as stored: GET /jobs/{id}
    refreshes them)."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobView]
    next_page_token: str | None = Field(
        default=None, description="Pass as page_token (same filters) for the next page."
    )


class ValidateResponse(BaseModel):
    """`POST /jobs:validate`: what ComfyUI's `POST /prompt` would say of the workflow."""

    valid: bool
    error: dict[str, Any] | None = Field(default=None, description="ComfyUI's error object.")
    node_errors: dict[str, Any] = Field(
        description="ComfyUI-shaped errors per node id, clipped so the answer stays bounded."
    )
    node_errors_omitted: int = Field(default=0, description="Nodes left out to stay bounded.")
    outputs_to_execute: list[str]


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable, e.g. invalid_request, workflow_invalid.")
    message: str
    field: str | None = Field(default=None, description="Dotted path of the offending field.")
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer; `node_errors` only for a workflow that failed pre-flight."""

    error: ErrorDetail
    node_errors: dict[str, Any] | None = None
    node_errors_omitted: int | None = Field(
        default=None, description="Nodes left out of node_errors to keep the answer bounded."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class EnvironmentView(BaseModel):
    """An environment as `POST /environments` and `GET /environments/{id}` answer it.

    `building`: asked for, its build job (on a GPU VM of the default class) not ended yet;
    `ready`: built, `node_types` is its catalogue, jobs may name it;
    `failed`: `error` says why, and jobs naming it are refused.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="env- and the sha256 of the packs and the ComfyUI commit.")
    state: EnvironmentState
    packs: list[str] = Field(description="The canonical packs, sorted.")
    comfyui_commit: str
    node_types: list[str] = Field(description="Node types the packs add (once built).")
    error: str | None = None
    private: bool = Field(
        description="Holds a pack outside the trusted sources: only its creator sees and "
        "uses it, and the creator is part of its id."
    )
    created_at: datetime

    @classmethod
    def of(cls, env: Environment) -> EnvironmentView:
        return cls(
            id=env.environment_id,
            state=env.state,
            packs=env.packs,
            comfyui_commit=env.comfyui_commit,
            node_types=env.node_types,
            error=env.error,
            private=env.private,
            created_at=env.created_at,
        )


class EnvironmentList(BaseModel):
    """`GET /environments`: the environments the caller asked for, most recent first."""

    model_config = ConfigDict(extra="forbid")

    environments: list[EnvironmentView]
