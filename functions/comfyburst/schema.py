"""The one definition of ComfyBurst's data: requests, jobs, done manifests, results, VM leases.

Imported by the functions, the worker agent and the ComfyUI node. Every top-level document
carries `schema_version`.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from comfyburst import SCHEMA_VERSION
from comfyburst.states import JobState

MAX_SIGNED_URL_TTL_S = 7 * 24 * 3600  # V4 signed URLs live at most 7 days
MAX_STORED_NODE_ERRORS_BYTES = 64 * 1024  # well inside Firestore's 1 MiB per document


class ModelKind(str, Enum):
    """ComfyUI model folders a job may bring files into."""

    CHECKPOINTS = "checkpoints"
    LORAS = "loras"
    VAE = "vae"
    CONTROLNET = "controlnet"
    UPSCALE_MODELS = "upscale_models"
    CLIP = "clip"
    CLIP_VISION = "clip_vision"
    TEXT_ENCODERS = "text_encoders"
    UNET = "unet"
    DIFFUSION_MODELS = "diffusion_models"
    EMBEDDINGS = "embeddings"
    STYLE_MODELS = "style_models"
    HYPERNETWORKS = "hypernetworks"
    GLIGEN = "gligen"
    PHOTOMAKER = "photomaker"


def check_relative_path(value: str, *, allow_subdirs: bool) -> str:
    """Reject names that could escape their folder: '..', absolute, backslash, NUL, empty parts."""
    if not value or len(value) > 255:
        raise ValueError("must be 1 to 255 characters")
    if "\x00" in value or "\\" in value:
        raise ValueError("must not contain NUL or backslash")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise ValueError("must be a relative path")
    parts = value.split("/")
    if not allow_subdirs and len(parts) > 1:
        raise ValueError("must be a plain file name without '/'")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError("must not contain empty, '.' or '..' path parts")
    if posixpath.normpath(value) != value:
        raise ValueError("must be a normalised relative path")
    if any(ord(ch) < 32 for ch in value):
        raise ValueError("must not contain control characters")
    return value


# ComfyUI reads a file value ending in one of these from that folder instead of the node's own
# (`folder_paths.annotated_filepath`; matched without the space, as ComfyUI does).
COMFY_FOLDER_ANNOTATIONS = ("[input]", "[output]", "[temp]")


def is_plain_file_value(value: str) -> bool:
    """Whether a file value names a file of its own folder only: not annotated, not absolute,
    no '..', no separators. The one rule for every file value a job names."""
    return bool(value) and not (
        value.endswith(COMFY_FOLDER_ANNOTATIONS)
        or ".." in value
        or "/" in value
        or "\\" in value
        or "\x00" in value
        or (len(value) > 1 and value[1] == ":")
        or value.strip() != value
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """A model file the job needs, fetched into ComfyUI's folder for its kind."""

    kind: ModelKind
    filename: str = Field(description="File name inside the kind's folder; may hold sub-folders.")
    url: str = Field(max_length=2048, description="https:// (allow-listed host) or gs:// URL.")
    sha256: str | None = Field(default=None, description="Expected SHA-256, lowercase hex.")
    size_bytes: int | None = Field(default=None, ge=1)

    @field_validator("filename")
    @classmethod
    def _safe_filename(cls, value: str) -> str:
        # Any such name is the job's own: the worker's store never uses it (its files are
        # named by content and URL hash) and shows it only in that job's model view.
        return check_relative_path(value, allow_subdirs=True)

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.lower()
        if len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
            raise ValueError("must be 64 hexadecimal characters")
        return value

    @property
    def key(self) -> str:
        """The cache key of this file: '{kind}/{filename}'."""
        return f"{self.kind.value}/{self.filename}"


class InputImage(_Strict):
    """An input file uploaded with the job; LoadImage nodes refer to it by `name`."""

    name: str
    data_b64: str = Field(description="The file's bytes, standard base64.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        value = check_relative_path(value, allow_subdirs=False)
        if not is_plain_file_value(value):
            raise ValueError(
                "must be a plain file name: no '..', no [input]/[output]/[temp] annotation, "
                "no leading or trailing spaces"
            )
        return value

    @field_validator("data_b64")
    @classmethod
    def _valid_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("is not valid base64") from exc
        return value

    def decode(self) -> bytes:
        return base64.b64decode(self.data_b64, validate=True)

    @property
    def size_bytes(self) -> int:
        """Decoded size without decoding."""
        padding = self.data_b64[-2:].count("=")
        return len(self.data_b64) * 3 // 4 - padding


class OutputFormat(str, Enum):
    ORIGINAL = "original"  # whatever ComfyUI wrote
    PNG = "png"
    WEBP = "webp"
    JPEG = "jpeg"


# A GPU class name: usable as a Compute Engine label value and in a VM name.
GPU_CLASS_NAME_PATTERN = r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$"


class JobOptions(_Strict):
    timeout_s: int = Field(default=1800, ge=10, le=24 * 3600, description="Deadline from submit.")
    output_format: OutputFormat = OutputFormat.ORIGINAL
    signed_url_ttl_s: int = Field(default=3600, ge=60, le=MAX_SIGNED_URL_TTL_S)
    gpu_class: str | None = Field(
        default=None,
        pattern=GPU_CLASS_NAME_PATTERN,
        description="The GPU class to run on (GET /gpu-classes); default: the deployment's.",
    )
    environment: str | None = Field(
        default=None,
        pattern=r"^env-[0-9a-f]{64}$",
        description="An environment of custom-node packs (POST /environments) to run in; it "
        "must be ready and, if private, the caller's. Default: the image's own nodes.",
    )


class GpuClassInfo(_Strict):
    """What a caller may learn of a GPU class (`GET /gpu-classes`)."""

    name: str
    machine_type: str = ""
    accelerator_type: str = ""
    accelerator_count: int = 0
    spot: bool = False
    price_per_hour: float = Field(default=0.0, description="USD per VM hour, as receipts use.")
    regions: list[str] = Field(default_factory=list)
    default: bool = False
    warm: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Warm schedule: windows {days, from, to, time_zone, vms} with VMs kept up.",
    )
    warm_cost_per_week: float = Field(
        default=0.0, description="USD a week the warm schedule's idle VMs cost at price_per_hour."
    )


class GpuClassList(_Strict):
    """`GET /gpu-classes`: the deployment's classes, the default and the preemption fallback."""

    gpu_classes: list[GpuClassInfo]
    default: str
    preemption_fallback: str | None = None


class WorkflowNode(BaseModel):
    """One node of an API-format workflow; extra keys such as `_meta` are kept."""

    model_config = ConfigDict(extra="allow")

    class_type: str = Field(min_length=1, max_length=256)
    inputs: dict[str, Any] = Field(default_factory=dict)


class JobRequest(_Strict):
    """What a caller submits: an API-format workflow, the models it needs, its input images."""

    schema_version: Literal[1] = SCHEMA_VERSION
    workflow: dict[str, WorkflowNode] = Field(min_length=1)
    models: list[ModelSpec] = Field(default_factory=list, max_length=64)
    inputs: list[InputImage] = Field(default_factory=list, max_length=64)
    options: JobOptions = Field(default_factory=JobOptions)
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="https:// URL told of the terminal result (Standard Webhooks signed).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> JobRequest:
        keys = [m.key for m in self.models]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate model filenames: {', '.join(duplicates)}")
        names = [i.name for i in self.inputs]
        dup_inputs = sorted({n for n in names if names.count(n) > 1})
        if dup_inputs:
            raise ValueError(f"duplicate input names: {', '.join(dup_inputs)}")
        return self

    def workflow_dict(self) -> dict[str, Any]:
        """The workflow as plain JSON, as ComfyUI's /prompt wants it."""
        return {k: v.model_dump(mode="json") for k, v in self.workflow.items()}


class RequestSummary(_Strict):
    """What the job document keeps of the request (the whole request lives in GCS)."""

    node_count: int
    class_types: list[str]
    models: list[str] = Field(description="'{kind}/{filename}' of every model the job brings")
    input_names: list[str]
    workflow_bytes: int

    @classmethod
    def of(cls, request: JobRequest, workflow_bytes: int) -> RequestSummary:
        return cls(
            node_count=len(request.workflow),
            class_types=sorted({n.class_type for n in request.workflow.values()}),
            models=[m.key for m in request.models],
            input_names=[i.name for i in request.inputs],
            workflow_bytes=workflow_bytes,
        )


class Progress(_Strict):
    node: str | None = None
    value: int = 0
    max: int = 0
    fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="Whole-workflow fraction.")


class JobError(_Strict):
    type: str = Field(description="Machine-readable kind, e.g. execution_error, model_fetch.")
    message: str
    node_id: str | None = None
    node_type: str | None = None
    details: Any = Field(
        default=None,
        description="Machine-readable context. In done.json, JSON values (what ComfyUI "
        "answered, clipped); on a job and in its result message, a worker's details are "
        "compact JSON text clipped to 64 KiB, as Firestore cannot hold every JSON value "
        "ComfyUI sends (an array in an array).",
    )


class OutputFile(_Strict):
    name: str
    size_bytes: int = Field(ge=0)
    sha256: str
    content_type: str
    gs_uri: str | None = None
    signed_url: str | None = None
    signed_url_expires_at: datetime | None = None
    node_id: str | None = Field(
        default=None, description="The ComfyUI node whose outputs listed the file, when known."
    )
    animated: bool = Field(
        default=False,
        description="ComfyUI flagged the node's images `animated` (SaveAnimatedWEBP/PNG, videos).",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_relative_path(value, allow_subdirs=True)


class VmRef(_Strict):
    name: str
    zone: str
    operation: str | None = Field(default=None, description="The start operation, if known.")


# An environment's `/object_info` rides in its Firestore document (1 MiB at most) as text.
MAX_ENV_OBJECT_INFO_BYTES = 512 * 1024


class EnvironmentBuild(_Strict):
    """What a build job builds (services/environments.py): no workflow, the packs instead."""

    environment_id: str
    packs: list[str] = Field(max_length=64, description="Canonical pack texts, sorted.")


class EnvironmentBuilt(_Strict):
    """What a build job's done flag reports: the catalogue and where the layer is stored."""

    environment_id: str
    node_types: list[str] = Field(max_length=10_000)
    archive: str = Field(description="gs:// URI of the layer's archive.")
    object_info_json: str | None = Field(
        default=None,
        max_length=MAX_ENV_OBJECT_INFO_BYTES,
        description="The packs' node types as `/object_info` JSON text (pre-flight's catalogue).",
    )


class Job(_Strict):
    """The job document, `jobs/{job_id}`."""

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    state: JobState = JobState.QUEUED
    attempt: int = Field(default=1, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    preemptions: int = Field(
        default=0,
        ge=0,
        description="Spot preemptions this job survived; up to a cap they are not attempts.",
    )
    request: RequestSummary
    options: JobOptions = Field(default_factory=JobOptions)
    vm: VmRef | None = None
    gpu_class: str | None = Field(
        default=None, description="The GPU class the job runs on; None: the default class."
    )
    gpu_class_reason: str | None = Field(
        default=None, description="Why the job left the class it asked for (preemptions)."
    )
    created_at: datetime
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime
    state_changed_at: datetime
    expire_at: datetime | None = Field(default=None, description="Firestore TTL field.")
    progress: Progress = Field(default_factory=Progress)
    outputs: list[OutputFile] = Field(default_factory=list)
    error: JobError | None = None
    queued_reason: str | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    caller: str | None = None
    webhook_url: str | None = Field(default=None, description="Told of the terminal result.")
    # Comfy API v2's job `metadata`, checked by domain/labels.py at submit and fixed after.
    labels: dict[str, str] = Field(default_factory=dict, description="String labels.")
    label_pairs: list[str] = Field(
        default_factory=list, description="`key=value` of each label, for list filters."
    )
    worker_timings: WorkerTimings | None = None
    phases: JobPhases | None = Field(
        default=None, description="When each step of the run happened (set at completion)."
    )
    receipt: Receipt | None = Field(
        default=None, description="What the run cost (set at completion)."
    )
    idle_after_s: float | None = Field(
        default=None,
        ge=0,
        description="Its VM's idle time after this job until power-off (its last job only; "
        "written by the worker at power-off).",
    )
    accepted_outputs: list[str] = Field(
        default_factory=list,
        description="Node ids of the output nodes pre-flight accepted; the worker runs only "
        "these (empty on jobs from before pre-flight recorded them: run what ComfyUI accepts).",
    )
    # As JSON text: ComfyUI echoes values Firestore cannot store (arrays in arrays, `__x__`
    # keys, ints beyond 64 bits, deep nesting), and what ComfyUI accepts must stay accepted.
    preflight_node_errors_json: str | None = Field(
        default=None,
        max_length=MAX_STORED_NODE_ERRORS_BYTES,
        description="ComfyUI-shaped errors of outputs that will not run (the others do), as "
        "JSON text, clipped to a bound.",
    )
    preflight_node_errors_omitted: int = Field(
        default=0, ge=0, description="Nodes whose errors did not fit the bound."
    )
    environment_build: EnvironmentBuild | None = Field(
        default=None, description="Set on a job that builds an environment instead of a workflow."
    )
    environment_private: bool = Field(
        default=False,
        description="`options.environment` is private to the job's caller (set at submit from "
        "the environment's document), so the worker applies the isolation rule without "
        "reading it.",
    )
    # The result message is fixed when the job turns terminal and stored here, so a retried
    # publish (event redelivery) sends the same bytes; consumers dedupe on job_id + status.
    result: ResultMessage | None = None
    result_sha256: str | None = Field(default=None, description="sha256 of the result body")
    result_published_at: datetime | None = None


class DoneStatus(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def job_state(self) -> JobState:
        return JobState(self.value)


class WorkerTimings(_Strict):
    """Per-phase timings the worker measures, in seconds."""

    claim_s: float = 0.0
    model_fetch_s: float = 0.0
    model_bytes_downloaded: int = 0
    model_cache_hits: int = 0
    model_downloads: int = 0
    queue_wait_s: float = 0.0
    execution_s: float = 0.0
    upload_s: float = 0.0
    total_s: float = 0.0
    gpu_s: float = Field(default=0.0, description="VM seconds this job held the GPU.")
    environment_s: float | None = Field(
        default=None,
        description="Readying the job's environment: layer download, unpack and ComfyUI "
        "restart (0 when it was loaded already); for a job without one, the restart back to "
        "the base when its run needed one, else None.",
    )
    environment_downloaded: bool | None = Field(
        default=None,
        description="The environment's layer was downloaded for this job (not on disk "
        "already); False for a job without one whose run restarted ComfyUI, else None.",
    )


class JobPhases(_Strict):
    """When each step of a job's run happened (UTC). Absent: not on this job's path (a job a
    VM already up took has no boot steps) or not measured. Sources: docs/ARCHITECTURE.md."""

    requested_at: datetime | None = Field(
        default=None, description="Dispatcher's clock at the VM start/insert call."
    )
    running_at: datetime | None = Field(
        default=None, description="Compute's lastStartTimestamp of the VM's boot."
    )
    guest_booted_at: datetime | None = Field(
        default=None, description="The guest kernel's boot time (now - /proc/uptime)."
    )
    agent_up_at: datetime | None = Field(default=None, description="The worker process started.")
    idle_since_at: datetime | None = Field(
        default=None, description="A drain claim: when the VM's previous job ended."
    )
    warm_since_at: datetime | None = Field(
        default=None,
        description="A claim by a VM held for its class's warm schedule: when that hold began "
        "(its idle from then to the claim is the schedule's, not this job's).",
    )
    claimed_at: datetime | None = Field(default=None, description="The worker claimed the job.")
    comfyui_ready_at: datetime | None = Field(
        default=None, description="ComfyUI's first 200 (first job of a boot only)."
    )
    environment_ready_at: datetime | None = Field(
        default=None,
        description="ComfyUI answered in the job's environment (a job naming one), or back "
        "on the base (a job without one whose run restarted ComfyUI).",
    )
    models_ready_at: datetime | None = Field(
        default=None, description="The job's models were in its model view."
    )
    first_step_at: datetime | None = Field(
        default=None, description="ComfyUI's first executing/progress message of the prompt."
    )
    done_at: datetime | None = Field(
        default=None, description="The worker's run ended (before its done flag)."
    )


class WarmIdle(_Strict):
    """A stretch a VM ran holding no job for its class's warm schedule (or booted with none):
    not any job's cost; usage shows it apart (`vms_warm_idle`, written by the VM's worker when
    the stretch ends: at a claim or at power-off)."""

    vm_name: str
    gpu_class: str
    started_at: datetime
    ended_at: datetime
    idle_s: float = Field(ge=0)
    expire_at: datetime | None = Field(
        default=None, description="Firestore TTL field: past the longest usage range."
    )


class Receipt(_Strict):
    """What a job's run cost: VM seconds of its GPU class at the class's price.

    billed_s = boot_s + idle_s + run_s. Idle after the job (its VM's drain until power-off)
    is known only later: `idle_after_s` is set on the job document, never in the result.
    """

    gpu_class: str = Field(description="The class whose price applies.")
    price_per_hour: float = Field(ge=0, description="USD per VM hour of the class.")
    boot_s: float = Field(
        ge=0, description="RUNNING (else guest boot) to claim; 0 when the VM was already up."
    )
    idle_s: float = Field(ge=0, description="The VM's drain wait before claiming this job.")
    run_s: float = Field(ge=0, description="Claim to the end of the run (worker's clock).")
    billed_s: float = Field(ge=0, description="boot_s + idle_s + run_s.")
    cost_usd: float = Field(ge=0, description="billed_s x price_per_hour / 3600.")
    idle_after_s: float | None = Field(
        default=None,
        description="The VM's idle time after this job until power-off (its last job only; "
        "on the job document, never in the result message).",
    )
    idle_after_cost_usd: float | None = None


class DoneManifest(_Strict):
    """`jobs/{job_id}/done.json` in the signals bucket: the done flag, written last."""

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    attempt: int = Field(ge=1)
    vm: str
    status: DoneStatus
    outputs: list[OutputFile] = Field(default_factory=list)
    error: JobError | None = None
    timings: WorkerTimings = Field(default_factory=WorkerTimings)
    written_at: datetime
    next_job_id: str | None = Field(
        default=None, description="The job this VM claimed next, so its lease is kept."
    )
    phases: JobPhases | None = Field(default=None, description="The worker's part of the phases.")
    environment_built: EnvironmentBuilt | None = Field(
        default=None, description="A build job that succeeded: what it built."
    )

    @model_validator(mode="after")
    def _error_matches_status(self) -> DoneManifest:
        if self.status is DoneStatus.SUCCEEDED and self.error is not None:
            raise ValueError("a succeeded manifest carries no error")
        if self.status is DoneStatus.FAILED and self.error is None:
            raise ValueError("a failed manifest must carry an error")
        return self


class ResultOutput(_Strict):
    name: str
    gs_uri: str
    signed_url: str | None
    content_type: str
    size_bytes: int


class ResultTimings(_Strict):
    queued_s: float | None = None
    boot_s: float | None = None
    run_s: float | None = None
    total_s: float | None = None


class ResultMessage(_Strict):
    """Published to the results topic once per terminal job; attributes job_id and status."""

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    status: JobState
    outputs: list[ResultOutput] = Field(default_factory=list)
    error: JobError | None = None
    timings: ResultTimings = Field(default_factory=ResultTimings)
    attempt: int
    phases: JobPhases | None = None
    receipt: Receipt | None = None

    def attributes(self) -> dict[str, str]:
        return {"job_id": self.job_id, "status": self.status.value}


class Lease(_Strict):
    job_id: str
    expires_at: datetime


class VmRecord(_Strict):
    """`vms/{vm_name}`: the per-VM lease document, claimed with a precondition."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    zone: str
    lease: Lease | None = None
    models_cached: list[str] = Field(default_factory=list)
    environments: list[str] = Field(
        default_factory=list,
        description="Environment ids whose layers are on the VM's disk (written by its worker).",
    )
    last_seen: datetime | None = None
    cooldown_until: datetime | None = Field(
        default=None, description="Skip this VM until then (its zone had a stockout)."
    )

    def is_leased(self, now: datetime) -> bool:
        return self.lease is not None and self.lease.expires_at > now


class DispatchOrder(str, Enum):
    """Which queued job of a class starts next (the deployer's `dispatch_order`; the rule is
    domain/fair_share.py)."""

    FAIR = "fair"  # the caller with the fewest jobs running first: fair share between callers
    FIFO = "fifo"  # the oldest queued job first, whoever's: kept to compare with the above


class DeploymentConfig(_Strict):
    """The deployment's non-secret settings, given to each VM in its metadata."""

    schema_version: Literal[1] = SCHEMA_VERSION
    project_id: str
    jobs_bucket: str
    outputs_bucket: str
    signals_bucket: str
    models_bucket: str | None = None
    jobs_collection: str = "jobs"
    vms_collection: str = "vms"
    heartbeat_interval_s: float = 5.0
    lease_ttl_s: int = 900
    drain_grace_s: float = 30.0
    default_gpu_class: str = Field(
        default="default", description="The class of jobs and VMs that name none"
    )
    preemption_fallback_class: str | None = Field(
        default=None, description="The standard class a job moves to at the preemption cap"
    )
    model_hosts: list[str] = Field(default_factory=list)
    model_redirect_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts a model download may be redirected to (CDNs); never sent a token",
    )
    http_model_hosts: list[str] = Field(
        default_factory=list, description="host:port allowed over plain http (local tests only)"
    )
    gs_model_buckets: list[str] = Field(default_factory=list)
    custom_node_registry_url: str | None = Field(
        default=None, description="The Comfy registry's API that registry packs are fetched from"
    )
    custom_node_registry_download_hosts: list[str] = Field(
        default_factory=list, description="Hosts the registry's pack archives may come from"
    )
    civitai_token_secret: str | None = Field(default=None, description="Secret Manager name")
    huggingface_token_secret: str | None = Field(default=None, description="Secret Manager name")
    civitai_token_scope: list[str] = Field(
        default_factory=lambda: ["https://civitai.com/api/download/"],
        description="URL prefixes the Civitai token is sent to (never on other hosts)",
    )
    huggingface_token_scope: list[str] = Field(
        default_factory=lambda: ["https://huggingface.co/"],
        description="URL prefixes the Hugging Face token is sent to (never on other hosts)",
    )
    running_limits: dict[str, int] = Field(
        default_factory=dict,
        description="Most jobs starting or running at once per caller (`*`: everyone the map "
        "does not name); no entry: no limit. The draining worker's claim keeps to it.",
    )
    dispatch_order: DispatchOrder = Field(
        default=DispatchOrder.FAIR,
        description="Which queued job of its class a draining worker claims first: fair share "
        "between callers, or fifo (the oldest); the reaper dispatches in the same order.",
    )
    warm_schedule: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="GPU class -> warm windows {days, from, to, time_zone, vms}: inside one, "
        "a draining worker of that class stays up (domain/warm.py).",
    )


Job.model_rebuild()
