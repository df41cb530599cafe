"""Submit: check a job request completely, store it, create the job, dispatch it.

Order matters: every check (size, JSON, schema, policy, pre-flight) runs before anything is
written, so bad input leaves no document and no object behind. Then `request.json` and the
inputs go to the jobs bucket while a free VM and its documents are read (side by side); once
the request is stored, ONE Firestore commit creates the job in its first state together with
its idempotency document and its VM's lease (`starting` on that VM), and only then is the
VM's start requested. With no VM, the job is created `queued` with the reason. A job that
exists always has its request, a lease never names a job that does not exist, and a VM never
starts for a job that is not stored. The worker learns its job from the lease.

Idempotency: with an `Idempotency-Key`, the job id is derived from the caller and the key, and
`request.json` is written only if absent. A repeat with the same body answers the same job; a
repeat with a different body is refused (409 `idempotency_conflict`). The stored request
itself is the body hash: the request JSON is deterministic, so equal requests give equal bytes.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from comfyburst.domain import gpu_classes, request_policy
from comfyburst.domain.caller_limits import CallerLimits, check_class, running_hold
from comfyburst.domain.jobs import new_job
from comfyburst.domain.json_safety import (
    bounded_mapping,
    compact_json,
    field_path,
    parse_json_body,
)
from comfyburst.domain.labels import label_pairs
from comfyburst.domain.uploads import check_uploaded_models
from comfyburst.errors import (
    BudgetExceeded,
    IdempotencyConflict,
    InvalidRequest,
    JobExists,
    PreconditionFailed,
    PreflightRejected,
    QueueFull,
)
from comfyburst.ports import BlobStore, Clock, JobStore
from comfyburst.preflight import Catalogue, PromptVerdict, validate_prompt
from comfyburst.schema import MAX_STORED_NODE_ERRORS_BYTES, Job, JobRequest
from comfyburst.services._admission import ADMISSION
from comfyburst.services._job_leases import JobGone
from comfyburst.services.dispatch import Dispatcher
from comfyburst.services.environments import check_job_environment, with_environment
from comfyburst.services.uploads import stored_sizes
from comfyburst.services.usage import check_monthly_budget
from comfyburst.states import JobState

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_ERROR_DETAILS = 20


def workflow_can_run(verdict: PromptVerdict) -> bool:
    """ComfyUI's rule: accepted when at least one output validates. The valid outputs run; the
    errors of the others are kept on the job (`preflight_node_errors`) for the caller to see."""
    return verdict.accepted


def stored_node_errors(node_errors: dict[str, Any]) -> tuple[str | None, int]:
    """Node errors as the job keeps them: clipped JSON text that Firestore takes, and how many
    nodes did not fit."""
    if not node_errors:
        return None, 0
    kept, omitted = bounded_mapping(node_errors, MAX_STORED_NODE_ERRORS_BYTES)
    return compact_json(kept), omitted


@dataclass
class SubmitDeps:
    """What submit needs: ports, settings, the catalogue, the dispatcher."""

    store: JobStore
    blobs: BlobStore
    clock: Clock
    settings: Any
    catalogue: Callable[[], Catalogue]
    dispatcher: Dispatcher
    io: Executor  # writes the request while the dispatcher places the job
    uploads: Any = None  # services.uploads.ModelUploads; None: uploaded models are refused
    environments: Any = None  # ports.EnvironmentStore; None: a job naming one is refused
    # Counts a caller's jobs (adapters/firestore_views.FirestoreJobViews.count_jobs) for the
    # queue limit; None: counted from the store's listing (fakes; slow on Firestore).
    counts: Any = None


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed every check, with what the job document keeps of it."""

    request: JobRequest
    workflow_bytes: int
    verdict: PromptVerdict


@dataclass(frozen=True)
class SubmitResult:
    job: Job
    created: bool  # False: an earlier submit with the same idempotency key made this job


def check_request(body: bytes, settings: Any, catalogue: Catalogue) -> CheckedRequest:
    """Every check, in order: size, JSON, shape and limits, schema, policy. Writes nothing.

    The pre-flight verdict is returned, not raised, so `/jobs:validate` can answer it.
    """
    policy = request_policy.RequestPolicy.from_settings(settings)
    request_policy.check_body_size(len(body), policy)
    data = parse_json_body(body)
    workflow_bytes = request_policy.check_raw(data, policy)
    try:
        request = JobRequest.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(exc) from None
    request_policy.check_request(request, policy)
    extra_models: dict[str, list[str]] = {}
    for model in request.models:
        extra_models.setdefault(model.kind.value, []).append(model.filename)
    verdict = validate_prompt(
        request.workflow_dict(),
        catalogue,
        extra_models=extra_models,
        input_files=[image.name for image in request.inputs],
    )
    return CheckedRequest(request, workflow_bytes, verdict)


def submit_job(
    deps: SubmitDeps,
    body: bytes,
    *,
    idempotency_key: str | None,
    caller: str | None,
    labels: dict[str, str] | None = None,
) -> SubmitResult:
    """Accept a job request: check it, store it, create the job, dispatch it.

    `labels` (Comfy API v2's job `metadata`) were checked by domain/labels.py.
    """
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
    checked = check_request(body, deps.settings, deps.catalogue())
    # Before pre-flight's verdict: the image's catalogue lacks an environment's node types.
    env = check_job_environment(
        deps.environments, deps.settings, checked.request.options.environment, caller
    )
    if env is not None and env.object_info_json:
        # Checked again against the image's node types plus the environment's.
        checked = check_request(body, deps.settings, with_environment(deps.catalogue(), env))
    if not workflow_can_run(checked.verdict):
        raise PreflightRejected(checked.verdict.body.get("error"), checked.verdict.node_errors)
    request = checked.request
    bucket = getattr(deps.settings, "models_bucket", None)
    check_uploaded_models(request, bucket, caller, stored_sizes(deps.uploads, bucket))
    request_json = request.model_dump_json().encode()
    scoped_key = _scoped_key(caller, idempotency_key)
    job_id = _job_id(scoped_key)
    now = deps.clock.now()
    job = new_job(
        job_id=job_id,
        request=request,
        workflow_bytes=checked.workflow_bytes,
        now=now,
        max_attempts=deps.settings.max_attempts,
        ttl_days=deps.settings.job_ttl_days,
        idempotency_key=scoped_key,
        caller=caller,
    )
    errors_json, errors_omitted = stored_node_errors(checked.verdict.node_errors)
    job = job.model_copy(
        update={
            "accepted_outputs": list(checked.verdict.outputs_to_execute),
            # The class is recorded as resolved, so a later change of the default moves no job.
            "gpu_class": gpu_classes.for_settings(deps.settings)
            .resolve(request.options.gpu_class)
            .name,
            "preflight_node_errors_json": errors_json,
            "preflight_node_errors_omitted": errors_omitted,
            # The worker's isolation rule needs it, and reads no environment document.
            "environment_private": env is not None and env.private,
            "labels": dict(labels or {}),
            "label_pairs": label_pairs(labels or {}),
        }
    )
    # The deployer's limits, before anything is written: the class (403), the budget (403),
    # then the queue (429).
    limits = _limits_of(deps.settings).for_caller(caller)
    assert job.gpu_class is not None
    check_class(limits, job.gpu_class)
    try:
        # The month's receipts against the caller's budget (403), before the queue's count.
        check_monthly_budget(deps.counts, deps.store, caller, limits, now)
        with ADMISSION.queue_slot(caller, limits, lambda: _queued_of(deps, caller)):
            return _store_and_place(deps, job, request, request_json, caller)
    except (QueueFull, BudgetExceeded):
        if scoped_key is None or deps.store.get_job(job_id) is None:
            raise
    # A retried submit whose job exists: answered as ever (its job, or 409), nothing new.
    return _store_and_place(deps, job, request, request_json, caller)


def _store_and_place(
    deps: SubmitDeps, job: Job, request: JobRequest, request_json: bytes, caller: str | None
) -> SubmitResult:
    """Store the request, create the job with its lease in one commit, request the start."""
    job_id, scoped_key = job.job_id, job.idempotency_key
    # The request goes to GCS while the VM and the documents are read; the job is first
    # written (with its lease, one commit) only once the request is stored, and the start is
    # requested after that commit. A retried submit finds its job in that read (JobExists).
    stored_request = deps.io.submit(
        _write_request, deps, job_id, request, request_json, guarded=scoped_key is not None
    )
    try:
        placement = deps.dispatcher.place_new(
            job, before_commit=stored_request.result, hold=_running_hold(deps, caller)
        )
    except JobExists as exists:
        stored_request.result()  # the same key with another body: 409 before anything else
        earlier: Job = exists.job
        if earlier.caller != caller:  # cannot happen (the id hashes the caller); be sure
            raise IdempotencyConflict("this Idempotency-Key was used for another request") from None
        _same_request_or_conflict(deps, job_id, request_json)
        return SubmitResult(earlier, False)
    except JobGone as gone:
        # This submit stored the job, a refused create gave it back to the queue, and a
        # draining worker or another dispatcher took it before the next zone's try: placed.
        return SubmitResult(gone.job, True)
    finally:
        stored_request.result()  # (re-)raises a failed write; then nothing was committed
    stored = placement.job
    assert stored is not None
    logger.info(
        "job accepted",
        extra={
            "job_id": job.job_id,
            "state": stored.state.value,
            "vm": placement.vm.name if placement.vm else None,
            "queued_reason": stored.queued_reason,
        },
    )
    return SubmitResult(stored, True)


def _limits_of(settings: Any) -> CallerLimits:
    return getattr(settings, "caller_limits", None) or CallerLimits()


def _running_hold(deps: SubmitDeps, caller: str | None) -> str | None:
    """Why the caller's new job waits queued (its `max_running` reached), else None; counts
    the caller's starting and running jobs (one aggregation query) only when it has a limit."""
    limits = _limits_of(deps.settings).for_caller(caller)
    if limits.max_running is None:
        return None
    states = [JobState.STARTING, JobState.RUNNING]
    count = getattr(deps.counts, "count_jobs", None)
    if count is not None:
        running = int(count(caller, states))
    else:
        running = sum(1 for j in deps.store.list_jobs(states, limit=None) if j.caller == caller)
    return running_hold(limits, running)


def _queued_of(deps: SubmitDeps, caller: str | None) -> int:
    """The caller's queued jobs: one aggregation query (adapters/firestore_views.py); without
    that adapter (fakes), from the store's listing."""
    count = getattr(deps.counts, "count_jobs", None)
    if count is not None:
        return int(count(caller, [JobState.QUEUED]))
    return sum(1 for j in deps.store.list_jobs([JobState.QUEUED], limit=None) if j.caller == caller)


def jobs_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def _write_request(
    deps: SubmitDeps, job_id: str, request: JobRequest, request_json: bytes, *, guarded: bool
) -> None:
    bucket = deps.settings.jobs_bucket
    prefix = jobs_prefix(job_id)
    try:
        deps.blobs.write(
            bucket,
            prefix + "request.json",
            request_json,
            "application/json",
            if_generation_match=0 if guarded else None,
        )
    except PreconditionFailed:
        # A concurrent submit with the same key got here first; same body: carry on (the
        # job create below answers its job), else refuse.
        _same_request_or_conflict(deps, job_id, request_json)
    for image in request.inputs:
        deps.blobs.write(bucket, f"{prefix}inputs/{image.name}", image.decode(), _guess(image.name))


def _same_request_or_conflict(deps: SubmitDeps, job_id: str, request_json: bytes) -> None:
    stored = deps.blobs.read(deps.settings.jobs_bucket, jobs_prefix(job_id) + "request.json")
    if stored is not None and stored != request_json:
        # The body names no job: the key is the caller's own, but an answer stays id-free.
        raise IdempotencyConflict("this Idempotency-Key was used for a different request")


def check_idempotency_key(key: str, max_chars: int = MAX_IDEMPOTENCY_KEY_CHARS) -> None:
    """An Idempotency-Key header's value: 1 to `max_chars` printable ASCII characters."""
    if not key or len(key) > max_chars or not key.isprintable() or not key.isascii():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {max_chars} printable ASCII characters",
            field="Idempotency-Key",
        )


def _scoped_key(caller: str | None, key: str | None) -> str | None:
    """The key as stored: hashed with the caller, so two callers never share a key."""
    if key is None:
        return None
    digest = hashlib.sha256(f"{caller or ''}\n{key}".encode()).hexdigest()
    return f"k-{digest}"


def keyed_job_id(caller: str | None, key: str) -> str:
    """The id of the job that `caller`'s Idempotency-Key `key` makes (or made)."""
    return _job_id(_scoped_key(caller, key))


def _job_id(scoped_key: str | None) -> str:
    if scoped_key is None:
        return uuid.uuid4().hex
    # 32 hex characters like a random id; stable for one caller and key.
    return hashlib.sha256(scoped_key.encode()).hexdigest()[:32]


def _guess(name: str) -> str:
    lowered = name.lower()
    for suffix, content_type in (
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"),
        (".webp", "image/webp"),
        (".gif", "image/gif"),
    ):
        if lowered.endswith(suffix):
            return content_type
    return "application/octet-stream"


def _schema_error(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    # Paths hold the caller's keys (node ids, input names): cut to a bound.
    field = field_path(tuple(first["loc"]))
    details = [
        {"field": field_path(tuple(e["loc"])), "message": e["msg"][:500], "type": e["type"]}
        for e in errors[:MAX_ERROR_DETAILS]
    ]
    message = f"{field or 'request'}: {first['msg'][:500]}"
    return InvalidRequest(message, field=field, details=details)
