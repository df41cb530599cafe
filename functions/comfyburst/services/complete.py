"""The done-flag use case: a `jobs/{id}/done.json` landed in the signals bucket.

Events arrive at least once and out of order. The job document decides: only a live job whose
attempt equals the manifest's is completed, in one `update_job` transaction that also fixes the
result message; a terminal job whose result is not yet published gets that same message again.
Every error a done flag brings is stored bounded, its details as JSON text (`stored_error`):
a worker reports what ComfyUI answered, which Firestore cannot always hold as it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from comfyburst.domain.jobs import transition
from comfyburst.domain.manifest import (
    declared_attempt,
    done_flag_job_id,
    locate_outputs,
    parse_manifest,
    stored_error,
)
from comfyburst.domain.receipts import merge_phases, receipt_of
from comfyburst.errors import ManifestInvalid, PreconditionFailed
from comfyburst.ports import (
    BlobStore,
    Clock,
    Fleet,
    JobMutation,
    JobStore,
    JobWrite,
    Publisher,
    UrlSigner,
)
from comfyburst.schema import DoneManifest, Job, JobError, JobPhases, Receipt
from comfyburst.services._leases import release_lease
from comfyburst.services.environments import record_build
from comfyburst.services.results import finish, publish_result, split_gs_uri
from comfyburst.states import JobState

log = logging.getLogger(__name__)

_SOURCE_PREFIX = "//storage.googleapis.com/projects/_/buckets/"


@dataclass(frozen=True)
class StorageObject:
    """The object a storage CloudEvent is about."""

    bucket: str
    name: str
    generation: int | None = None
    size: int | None = None


def _int_or_none(value: Any) -> int | None:
    # In the cloud int64 fields arrive as strings; emulators may send numbers.
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def parse_storage_event(
    data: Any, source: str | None = None, subject: str | None = None
) -> StorageObject:
    """The object of a storage CloudEvent, from its data, else from `source`/`subject`."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            data = None
    fields: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
    bucket = fields.get("bucket")
    name = fields.get("name")
    if not isinstance(bucket, str) or not bucket:
        bucket = source.removeprefix(_SOURCE_PREFIX) if source else ""
        bucket = "" if bucket == source or "/" in bucket else bucket
    if not isinstance(name, str) or not name:
        name = subject.removeprefix("objects/") if subject else ""
        name = "" if name == subject else name
    return StorageObject(
        bucket=bucket,
        name=name,
        generation=_int_or_none(fields.get("generation")),
        size=_int_or_none(fields.get("size")),
    )


@dataclass(frozen=True)
class CompletionDeps:
    store: JobStore
    blobs: BlobStore
    signer: UrlSigner
    publisher: Publisher
    clock: Clock
    signals_bucket: str
    outputs_bucket: str
    # Runs the flag read beside the job read (the entry point's pool, wiring.io_pool); None:
    # one after the other (the reaper's safety net, which no caller waits on).
    reads: Executor | None = None
    # Reads a booted VM's lastStartTimestamp (RUNNING) for the job's phases; None: not read.
    fleet: Fleet | None = None
    # The job's GPU class and its price per VM hour, for the receipt; None: class "default"
    # at no price.
    price_of: Callable[[Job], tuple[str, float]] | None = None
    # Environments (ports.EnvironmentStore): a build job's end marks its environment ready or
    # failed (services/environments.record_build); None: left to the environment's next read.
    environments: Any = None


class _Presigned:
    """A UrlSigner answering from URLs signed before the transaction (mutations stay pure)."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self._urls = urls

    def sign_get(self, bucket: str, name: str, ttl_s: int) -> str:
        return self._urls[f"gs://{bucket}/{name}"]


def _outcome(kind: str, obj: StorageObject, job_id: str | None, **extra: Any) -> dict[str, Any]:
    result = {
        "outcome": kind,
        "bucket": obj.bucket,
        "name": obj.name,
        "generation": obj.generation,
        "job_id": job_id,
        **extra,
    }
    log.info("done flag %s", result)
    return result


def handle_done_flag(deps: CompletionDeps, obj: StorageObject) -> dict[str, Any]:
    """Complete the job a done flag is about; returns what happened (for logs and tests).

    Raises only when the result could not be published, so the event is delivered again.
    """
    job_id = done_flag_job_id(obj.name)
    if job_id is None or obj.bucket != deps.signals_bucket:
        return _outcome("ignored", obj, None)
    # Two independent reads on the latency path: run them side by side.
    if deps.reads is None:
        (job, version), raw = deps.store.read_job(job_id), deps.blobs.read(obj.bucket, obj.name)
    else:
        raw_future = deps.reads.submit(deps.blobs.read, obj.bucket, obj.name)
        job, version = deps.store.read_job(job_id)
        raw = raw_future.result()
    if job is None:
        return _outcome("unknown_job", obj, job_id)
    if job.state.terminal and job.result_published_at is not None:
        return _outcome("duplicate", obj, job_id, state=job.state.value)
    if raw is None:
        return _outcome("missing", obj, job_id)
    try:
        manifest = parse_manifest(raw, job_id)
    except ManifestInvalid as exc:
        return _invalid(deps, obj, job, raw, exc)
    if manifest.attempt != job.attempt:
        return _outcome("stale", obj, job_id, attempt=manifest.attempt, job_attempt=job.attempt)
    if job.state.terminal:
        return _republish(deps, obj, job, manifest)
    return _complete(deps, obj, job, version, manifest)


def _complete(
    deps: CompletionDeps, obj: StorageObject, seen: Job, version: object, manifest: DoneManifest
) -> dict[str, Any]:
    job_id = manifest.job_id
    now = deps.clock.now()
    outputs = locate_outputs(manifest, deps.outputs_bucket)
    ttl_s = seen.options.signed_url_ttl_s
    # The Compute read beside the signing: both before the transaction, which may run twice.
    running = deps.reads.submit(_running_at, deps, seen, manifest) if deps.reads else None
    # Signing may call IAM: do it before the transaction, whose mutation may run twice.
    urls = {
        o.gs_uri: deps.signer.sign_get(*split_gs_uri(o.gs_uri), ttl_s) for o in outputs if o.gs_uri
    }
    signer = _Presigned(urls)
    target = manifest.status.job_state
    running_at = running.result() if running else _running_at(deps, seen, manifest)
    gpu_class, price = _price(deps, seen)
    error = stored_error(manifest.error) if manifest.error is not None else None

    def mutate(job: Job) -> Job | None:
        if not job.state.live or job.attempt != manifest.attempt:
            return None
        if job.state is JobState.STARTING and target is JobState.SUCCEEDED:
            # The outputs prove the worker ran it; record the claim we missed, via the table.
            job = transition(job, JobState.RUNNING, now)
        progress = job.progress
        if target is JobState.SUCCEEDED:
            progress = progress.model_copy(update={"fraction": 1.0})
        phases, receipt = _phases_and_receipt(job, manifest, running_at, gpu_class, price)
        return finish(
            job,
            target,
            now,
            signer,
            outputs=outputs,
            worker_timings=manifest.timings,
            error=error,
            progress=progress,
            phases=phases,
            receipt=receipt,
        )

    ended = _write(deps.store, seen, version, mutate)
    if not ended.state.terminal:
        return _outcome("not_live", obj, job_id, state=ended.state.value)
    if ended.attempt != manifest.attempt:
        return _outcome("stale", obj, job_id, attempt=manifest.attempt, job_attempt=ended.attempt)
    # Before the publish: if this raises, the redelivered event marks it (`_republish`).
    record_build(deps.environments, ended, manifest, now)
    published = publish_result(deps.store, deps.publisher, ended, deps.clock.now())
    released = _release(deps, manifest)
    return _outcome("completed", obj, job_id, state=published.state.value, released=released)


def _write(store: JobStore, seen: Job, version: object, mutate: JobMutation) -> Job:
    """The job as `mutate` leaves it: one commit under the version read with the flag (one
    round trip, on the result's latency path); a job changed since that read goes through the
    store's transaction, which reads and decides again."""
    updated = mutate(seen.model_copy(deep=True)) if version is not None else None
    if updated is not None:
        try:
            store.commit([], JobWrite(updated, version))
            return updated
        except PreconditionFailed:
            log.info("job %s changed since the done flag's read; deciding again", seen.job_id)
    return store.update_job(seen.job_id, mutate)


def _running_at(deps: CompletionDeps, job: Job, manifest: DoneManifest) -> datetime | None:
    """Compute's lastStartTimestamp of the VM, read once, for a run that began with a boot.

    The guest cannot see it (the metadata server does not serve it); a failed read leaves
    RUNNING out of the phases rather than delaying the result.
    """
    worker = manifest.phases
    booted = worker is not None and (worker.guest_booted_at or worker.agent_up_at)
    if deps.fleet is None or not booted or job.vm is None or job.vm.name != manifest.vm:
        return None
    try:
        return deps.fleet.get(job.vm.zone, job.vm.name).last_start_at
    except Exception as exc:
        log.warning("lastStartTimestamp of %s unreadable: %s", manifest.vm, exc)
        return None


def _price(deps: CompletionDeps, job: Job) -> tuple[str, float]:
    if deps.price_of is None:
        return getattr(job, "gpu_class", None) or "default", 0.0
    try:
        return deps.price_of(job)
    except Exception as exc:  # an unknown class: the receipt shows no price, the job ends
        log.warning("no price for job %s: %s", job.job_id, exc)
        return getattr(job, "gpu_class", None) or "default", 0.0


def _phases_and_receipt(
    job: Job, manifest: DoneManifest, running_at: datetime | None, gpu_class: str, price: float
) -> tuple[JobPhases | None, Receipt | None]:
    """The job's phases and receipt; none from a worker that recorded no phases."""
    if manifest.phases is None:
        return None, None
    phases = merge_phases(job, manifest.phases, running_at)
    if phases.claimed_at is None or phases.done_at is None:
        return phases, None
    return phases, receipt_of(phases, gpu_class, price)


def _republish(
    deps: CompletionDeps, obj: StorageObject, job: Job, manifest: DoneManifest
) -> dict[str, Any]:
    """A redelivery after a failed publish (or a late flag for a job the reaper ended)."""
    record_build(deps.environments, job, manifest, deps.clock.now())
    publish_result(deps.store, deps.publisher, job, deps.clock.now())
    released = _release(deps, manifest)
    return _outcome("republished", obj, job.job_id, state=job.state.value, released=released)


def _release(deps: CompletionDeps, manifest: DoneManifest) -> bool:
    if manifest.next_job_id is not None:
        return False  # the worker re-pointed the lease to the job it claimed next
    return release_lease(deps.store, manifest.vm, manifest.job_id, last_seen=manifest.written_at)


def _invalid(
    deps: CompletionDeps, obj: StorageObject, job: Job, raw: bytes, exc: ManifestInvalid
) -> dict[str, Any]:
    """A manifest that does not validate fails its job (never a retry loop)."""
    attempt = declared_attempt(raw)
    if attempt is not None and attempt != job.attempt:
        return _outcome("stale", obj, job.job_id, attempt=attempt, job_attempt=job.attempt)
    if job.state.terminal:
        publish_result(deps.store, deps.publisher, job, deps.clock.now())
        return _outcome("republished", obj, job.job_id, state=job.state.value)
    now = deps.clock.now()
    error = stored_error(
        JobError(type="manifest_invalid", message=exc.message, details=exc.details)
    )

    def mutate(current: Job) -> Job | None:
        if not current.state.live or current.attempt != job.attempt:
            return None
        return finish(current, JobState.FAILED, now, None, error=error)

    ended = deps.store.update_job(job.job_id, mutate)
    if not (ended.state.terminal and ended.error and ended.error.type == "manifest_invalid"):
        return _outcome("not_live", obj, job.job_id, state=ended.state.value)
    publish_result(deps.store, deps.publisher, ended, deps.clock.now())
    released = ended.vm is not None and release_lease(deps.store, ended.vm.name, job.job_id, now)
    return _outcome(
        "manifest_invalid",
        obj,
        job.job_id,
        state=ended.state.value,
        error=error.message,
        released=released,
    )
