"""Cancel: a queued job ends at once; a starting or running one is asked to stop."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from comfyburst.domain.tenancy import can_see
from comfyburst.errors import JobFinished, NotFound
from comfyburst.ports import Clock, JobStore, Publisher
from comfyburst.schema import Job, JobError
from comfyburst.services.results import finish, publish_result
from comfyburst.services.status import job_not_found
from comfyburst.states import JobState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CancelResult:
    job: Job
    cancelled: bool  # True: the job is cancelled now; False: the worker was asked to stop it


def cancel_job(
    store: JobStore,
    publisher: Publisher,
    clock: Clock,
    job_id: str,
    *,
    caller: str | None,
    admins: Collection[str] = (),
) -> CancelResult:
    """Cancel the caller's job: queued -> cancelled (result published); starting/running ->
    requested.

    Raises NotFound for an unknown job and for another caller's job alike, JobFinished (409)
    for a terminal one; the store backs off under contention and raises Contended (503 with
    Retry-After) only when that did not help.
    """
    now = clock.now()
    terminal_state: list[JobState] = []

    def mutate(current: Job) -> Job | None:
        terminal_state.clear()
        if not can_see(caller, current, admins):
            raise job_not_found(job_id)
        if current.state.terminal:
            terminal_state.append(current.state)
            return None
        if current.state is JobState.QUEUED:
            error = JobError(type="cancelled", message="cancelled by the caller")
            return finish(current, JobState.CANCELLED, now, error=error)
        if current.cancel_requested:
            return None
        # The worker watches this flag, interrupts ComfyUI and writes a `cancelled` done flag.
        return current.model_copy(update={"cancel_requested": True})

    try:
        job = store.update_job(job_id, mutate)
    except NotFound:
        raise job_not_found(job_id) from None
    if terminal_state:
        raise JobFinished(
            f"job {job_id} is already {job.state.value}", details={"state": job.state.value}
        )
    if job.state is JobState.CANCELLED:
        logger.info("job cancelled", extra={"job_id": job_id})
        try:
            job = publish_result(store, publisher, job, now)
        except Exception:
            # The job is cancelled either way; `result_published_at` stays empty, so the
            # result can be republished (the reaper's sweep of terminal, unpublished jobs).
            logger.exception("publishing the cancel result failed", extra={"job_id": job_id})
        return CancelResult(job, True)
    logger.info("cancel requested", extra={"job_id": job_id, "state": job.state.value})
    return CancelResult(job, False)
