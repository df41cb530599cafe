"""Pure rules for job documents: creation, transitions, timings. No I/O, `now` passed in."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from comfyburst.schema import Job, JobRequest, RequestSummary, ResultTimings
from comfyburst.states import JobState, check_transition


def new_job(
    *,
    job_id: str,
    request: JobRequest,
    workflow_bytes: int,
    now: datetime,
    max_attempts: int,
    ttl_days: int,
    idempotency_key: str | None = None,
    caller: str | None = None,
) -> Job:
    """A queued job for an accepted request."""
    return Job(
        job_id=job_id,
        state=JobState.QUEUED,
        max_attempts=max_attempts,
        request=RequestSummary.of(request, workflow_bytes),
        options=request.options,
        created_at=now,
        deadline_at=now + timedelta(seconds=request.options.timeout_s),
        state_changed_at=now,
        expire_at=now + timedelta(days=ttl_days),
        idempotency_key=idempotency_key,
        caller=caller,
        webhook_url=request.webhook_url,
    )


def transition(job: Job, target: JobState, now: datetime, **changes: Any) -> Job:
    """The job moved to `target` (checked against the table), with `changes` applied."""
    check_transition(job.state, target)
    update: dict[str, Any] = {"state": target, "state_changed_at": now, **changes}
    if target.terminal:
        update.setdefault("finished_at", now)
    if target is JobState.RUNNING:
        update.setdefault("started_at", now)
        update.setdefault("heartbeat_at", now)
    return job.model_copy(update=update)


def requeue(job: Job, now: datetime, reason: str) -> Job:
    """Back to queued for another attempt after a retryable infrastructure fault."""
    return transition(
        job,
        JobState.QUEUED,
        now,
        attempt=job.attempt + 1,
        vm=None,
        dispatched_at=None,
        started_at=None,
        heartbeat_at=None,
        queued_reason=reason,
    )


# Preemptions up to this many are free; later ones count as attempts (a Spot zone that keeps
# preempting must not keep a job forever).
FREE_PREEMPTIONS = 3
REASON_PREEMPTED = "preempted"


def requeue_preempted(job: Job, now: datetime, fallback_class: str | None = None) -> Job:
    """Back to queued at once after a Spot preemption: a new attempt that is not counted.

    Once its preemptions reach FREE_PREEMPTIONS, a job moves to `fallback_class` (the
    deployment's standard class, when it has one), so Spot cannot keep interrupting it."""
    count = job.preemptions + 1
    requeued = requeue(job, now, REASON_PREEMPTED).model_copy(update={"preemptions": count})
    if fallback_class is None or count < FREE_PREEMPTIONS or job.gpu_class == fallback_class:
        return requeued
    return onto_fallback(requeued, fallback_class)


def onto_fallback(job: Job, fallback_class: str) -> Job:
    """The job on the fallback class, saying why (its preemptions reached the cap)."""
    reason = (
        f"preempted {job.preemptions} times on {job.gpu_class or 'the default class'}; "
        f"moved to {fallback_class}"
    )
    return job.model_copy(
        update={"gpu_class": fallback_class, "gpu_class_reason": reason, "queued_reason": reason}
    )


def attempts_counted(job: Job) -> int:
    """Attempts that count toward `max_attempts`: preemptions up to FREE_PREEMPTIONS do not."""
    return job.attempt - min(job.preemptions, FREE_PREEMPTIONS)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def result_timings(job: Job) -> ResultTimings:
    """Queue, boot, run and total seconds of a job as far as they are known."""
    return ResultTimings(
        queued_s=_seconds(job.created_at, job.dispatched_at or job.started_at),
        boot_s=_seconds(job.dispatched_at, job.started_at),
        run_s=_seconds(job.started_at, job.finished_at),
        total_s=_seconds(job.created_at, job.finished_at),
    )
