"""Comfy API v2 bodies as pydantic models: what the views build and what the served
OpenAPI document (`GET /api/v2/openapi.json`, api/_v2_openapi.py) is generated from.

Shapes follow the pinned comfy-sdk's generated models (`comfy_low.models`), which are what
users run; our additions are optional fields the SDK ignores.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from comfyburst.domain.labels import MAX_LABELS, MAX_VALUE_BYTES
from comfyburst.schema import JobOptions, JobRequest, ModelSpec

# The namespaced object of our own options on a v2 job request (api/_v2_submit.py).
EXTENSION_KEY = "comfyburst"
V2Status = Literal["queued", "running", "succeeded", "canceling", "canceled", "failed", "expired"]
OutputType = Literal["image", "video", "audio", "text", "file", "latent"]


class V2Progress(BaseModel):
    """The latest progress snapshot of a running job."""

    value: float = Field(ge=0.0, le=1.0, description="Whole-workflow fraction")
    nodes_done: int = Field(ge=0)
    nodes_total: int = Field(ge=0)
    current_node: str | None
    step: int | None
    steps: int | None


class V2JobError(BaseModel):
    """Why a job failed or expired (a job field, not an HTTP error)."""

    code: str
    message: str
    node_id: str | None
    class_type: str | None


class V2JobUrls(BaseModel):
    """Host-relative links, with the /api/v2 prefix."""

    self: str
    events: str
    cancel: str


class V2Output(BaseModel):
    """A job output; also an asset (`id`)."""

    node_id: str
    name: str
    type: OutputType
    content_type: str
    size_bytes: int = Field(ge=0)
    id: str
    hash: str | None = Field(description="Null: outputs keep a sha256, not a blake3")
    url: str
    url_expires_at: datetime
    job_id: str | None


class V2Job(BaseModel):
    """One job."""

    id: str
    status: V2Status
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime
    queue_position: int | None
    progress: V2Progress | None
    outputs: list[V2Output]
    error: V2JobError | None
    metrics: dict[str, int | None] = Field(
        description="queue_ms, boot_ms (our VM start), execution_ms, then the run's cold-start "
        "phases: vm_start_ms, guest_boot_ms, agent_start_ms, claim_ms, comfyui_start_ms, "
        "environment_ms, models_ms, first_step_ms, run_ms; null until known or when skipped"
    )
    urls: V2JobUrls
    metadata: dict[str, str] = Field(description="The labels given at submit; {} when none")


class V2JobListItem(BaseModel):
    """One item of `GET /api/v2/jobs`."""

    id: str
    status: V2Status
    create_time: datetime
    update_time: datetime
    deployment_id: str | None
    metadata: dict[str, str]


class V2JobList(BaseModel):
    """One page of the caller's jobs, newest first."""

    jobs: list[V2JobListItem]
    next_cursor: str | None = Field(default=None, description="Absent on the last page")


class V2Workflow(BaseModel):
    """The API-format graph a job ran."""

    workflow: dict[str, Any]
    format: Literal["api"]


class V2Asset(BaseModel):
    """An asset: an uploaded input (`up-…`) or a job output (`out-…`)."""

    id: str
    hash: str | None = Field(description="`blake3:<hex>` of an upload; null for an output")
    size_bytes: int = Field(ge=0)
    content_type: str
    file_path: str | None
    created_new: bool | None = Field(
        default=None, description="On create: new bytes (true) or bytes already held (false)"
    )
    created_at: datetime
    url: str = Field(description="A freshly signed GET URL of the bytes")
    url_expires_at: datetime
    expires_at: datetime | None = Field(description="Null: kept until deleted")
    job_id: str | None


class V2ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class V2ErrorEnvelope(BaseModel):
    """Every v2 refusal: `{"error": {code, message, details}}`."""

    error: V2ErrorDetail


def _ours(model: type[BaseModel], name: str) -> Any:
    """Our request's field `name` (its constraints and text), optional here."""
    return FieldInfo.merge_field_infos(model.model_fields[name], default=None, default_factory=None)


class V2Extension(BaseModel):
    """`comfyburst`: what v2 lacks, checked by our own job request's rules."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] | None = _ours(JobRequest, "models")
    gpu_class: str | None = _ours(JobOptions, "gpu_class")
    environment: str | None = _ours(JobOptions, "environment")
    timeout_s: int | None = _ours(JobOptions, "timeout_s")
    webhook_url: str | None = _ours(JobRequest, "webhook_url")


class V2SubmitBody(BaseModel):
    """What `POST /api/v2/jobs` takes."""

    model_config = ConfigDict(extra="forbid")

    workflow: dict[str, Any] = Field(
        description="The API-format graph; `core/ASSET` objects name the caller's assets"
    )
    metadata: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description="Labels kept on the job (keys: 1 to 40 of `A-Z a-z 0-9 _ - .`; values: "
        f"at most {MAX_VALUE_BYTES} bytes, no control or bidi characters); "
        "422 `metadata_invalid` otherwise",
    )
    extra_data: dict[str, Any] | None = Field(
        default=None, description="Not supported: a non-empty object is refused"
    )
    comfyburst: V2Extension | None = Field(
        default=None, description="ComfyBurst's options (models, GPU class, environment, ...)"
    )


class V2FromHashBody(BaseModel):
    """What `POST /api/v2/assets/from-hash` takes."""

    model_config = ConfigDict(extra="forbid")

    hash: str = Field(pattern=r"^blake3:[0-9a-f]{64}$")
    file_path: str | None = Field(default=None, min_length=1, max_length=255)
    tags: list[str] | None = None


class V2AssetUpload(BaseModel):
    """The multipart form of `POST /api/v2/assets` (documented; parsed by the route)."""

    file: bytes = Field(json_schema_extra={"format": "binary"}, description="The bytes")
    content_type: str | None = Field(default=None, max_length=255)
    file_path: str | None = Field(default=None, max_length=255)
    expected_hash: str | None = Field(default=None, pattern=r"^blake3:[0-9a-f]{64}$")
    tags: list[str] | None = None
