"""Builders shared by the completion, results and reaper tests: jobs in a given state, leases,
done manifests. Pure data; the stores they go into are the caller's."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from comfyburst.domain.jobs import new_job, transition
from comfyburst.schema import (
    DoneManifest,
    Job,
    JobRequest,
    Lease,
    OutputFile,
    VmRecord,
    VmRef,
    WorkerTimings,
)
from comfyburst.states import JobState

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}}


def make_job(
    job_id: str,
    now: datetime,
    state: JobState = JobState.QUEUED,
    *,
    vm: str | None = "gpu-1",
    zone: str = "zone-a",
    attempt: int = 1,
    max_attempts: int = 3,
    timeout_s: int = 1800,
    operation: str | None = None,
) -> Job:
    """A job that reached `state` at `now` the legal way (through the transition table)."""
    request = JobRequest.model_validate({"workflow": WORKFLOW, "options": {"timeout_s": timeout_s}})
    job = new_job(
        job_id=job_id,
        request=request,
        workflow_bytes=80,
        now=now,
        max_attempts=max_attempts,
        ttl_days=30,
    ).model_copy(update={"attempt": attempt})
    via_vm = state in (JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED)
    if via_vm and vm is not None:
        ref = VmRef(name=vm, zone=zone, operation=operation)
        job = transition(job, JobState.STARTING, now, vm=ref, dispatched_at=now)
    if state in (JobState.RUNNING, JobState.SUCCEEDED):
        job = transition(job, JobState.RUNNING, now)
    if state.terminal:
        job = transition(job, state, now)
    return job


def lease_record(
    name: str, job_id: str | None, now: datetime, *, zone: str = "zone-a", ttl_s: int = 900
) -> VmRecord:
    lease = Lease(job_id=job_id, expires_at=now + timedelta(seconds=ttl_s)) if job_id else None
    return VmRecord(name=name, zone=zone, lease=lease)


def manifest(
    job_id: str,
    now: datetime,
    *,
    status: str = "succeeded",
    attempt: int = 1,
    vm: str = "gpu-1",
    outputs: list[tuple[str, bytes]] | None = None,
    next_job_id: str | None = None,
    error: dict[str, Any] | None = None,
) -> DoneManifest:
    import hashlib

    files = [
        OutputFile(
            name=name,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            content_type="image/png",
        )
        for name, data in (outputs or [])
    ]
    return DoneManifest(
        job_id=job_id,
        attempt=attempt,
        vm=vm,
        status=status,
        outputs=files,
        error=error,
        timings=WorkerTimings(execution_s=1.5, total_s=2.0),
        written_at=now,
        next_job_id=next_job_id,
    )


def fake_completion_deps(signals_bucket: str, outputs_bucket: str) -> tuple[Any, Any]:
    """Completion deps on in-memory fakes, and their clock."""
    from comfyburst.services.complete import CompletionDeps
    from tests.fakes import (
        FakeSigner,
        FixedClock,
        InMemoryBlobStore,
        InMemoryJobStore,
        InMemoryPublisher,
    )

    clock = FixedClock()
    deps = CompletionDeps(
        store=InMemoryJobStore(),
        blobs=InMemoryBlobStore(),
        signer=FakeSigner(),
        publisher=InMemoryPublisher(),
        clock=clock,
        signals_bucket=signals_bucket,
        outputs_bucket=outputs_bucket,
    )
    return deps, clock
