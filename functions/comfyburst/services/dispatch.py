"""Dispatch: give queued jobs a free VM and request its start (the API and the reaper).

The VM side (lease, check, metadata, start) is `_placement.Placer`; this module moves the job
document: queued -> starting with `vm` and `dispatched_at` when a start was requested, or keeps
it queued with `queued_reason`. A job that left `queued` meanwhile (cancelled, or claimed by a
draining worker) gets its VM stopped and its lease released.

The submit path uses `place_new` instead: the job is not stored yet, so it is created directly
in its first state (see services/submit.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from comfyburst.domain.jobs import transition
from comfyburst.ports import Clock, Fleet, JobStore
from comfyburst.schema import Job, VmRef
from comfyburst.services._fleet_view import DEFAULT_MAX_AGE_S
from comfyburst.services._placement import (
    METADATA_CONFIG_KEY,
    METADATA_JOB_KEY,
    REASON_ERROR,
    Placement,
    Placer,
    pass_began,
    request_id,
)
from comfyburst.states import JobState

logger = logging.getLogger(__name__)

__all__ = [
    "METADATA_CONFIG_KEY",
    "METADATA_JOB_KEY",
    "DispatchOutcome",
    "Dispatcher",
    "Placement",
    "dispatch_job",
    "request_id",
]


@dataclass
class DispatchOutcome:
    """What one dispatch did: the job as stored afterwards and the VM it got, if any."""

    job: Job
    started: bool
    vm: VmRef | None = None
    reason: str | None = None
    tried: list[tuple[str, str]] = field(default_factory=list)  # (vm name, outcome or reason)


class Dispatcher:
    """Starts VMs for jobs; one instance per process (it caches the pool's state)."""

    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        clock: Clock,
        settings: Any,
        view_max_age_s: float = DEFAULT_MAX_AGE_S,
        io: Executor | None = None,
    ) -> None:
        """`io` runs a placement's independent calls (and the submit's request write) side by
        side; the entry point passes the process's pool (wiring.io_pool). Without one, this
        dispatcher makes its own."""
        self._store = store
        self._clock = clock
        self.io = io or ThreadPoolExecutor(max_workers=32, thread_name_prefix="dispatch-io")
        self._placer = Placer(store, fleet, settings, self.io, view_max_age_s)

    def dispatch(self, job: Job) -> DispatchOutcome:
        """Try to start a VM for one stored, queued job."""
        return self.dispatch_many([job])[0]

    def dispatch_many(self, jobs: Sequence[Job]) -> list[DispatchOutcome]:
        """Dispatch stored, queued jobs in order (oldest first is the caller's choice)."""
        if not jobs:
            return []
        began = pass_began()
        try:
            view = self._placer.view()
        except Exception:
            # Compute or Firestore unreachable: the jobs stay queued; the reaper retries.
            logger.exception("dispatch could not read the pool")
            return [DispatchOutcome(job, False, reason=REASON_ERROR) for job in jobs]
        outcomes = []
        for job in jobs:
            if job.state is not JobState.QUEUED:
                outcomes.append(DispatchOutcome(job, False, reason=f"job is {job.state.value}"))
                continue
            try:
                now = self._clock.now()
                placement, view = self._placer.place(job, now, began, view)
                outcomes.append(self._record(job, placement))
            except Exception:
                # One job's failure must not stop the others; it stays queued for the reaper.
                logger.exception("dispatch failed", extra={"job_id": job.job_id})
                outcomes.append(DispatchOutcome(job, False, reason=REASON_ERROR))
        return outcomes

    def place_new(self, job: Job, before_start: Callable[[], object] | None = None) -> Placement:
        """Place a job that is not stored yet; `before_start` runs before any VM starts."""
        began = pass_began()
        try:
            view = self._placer.view()
        except Exception:
            logger.exception("dispatch could not read the pool", extra={"job_id": job.job_id})
            return Placement(None, REASON_ERROR)
        placement, _ = self._placer.place(job, self._clock.now(), began, view, before_start)
        return placement

    def undo(self, job: Job, placement: Placement) -> None:
        """Stop the VM and release the lease of a placement that is not wanted after all."""
        self._placer.undo(job, placement)

    # --- job documents ---------------------------------------------------------------------

    def _record(self, job: Job, placement: Placement) -> DispatchOutcome:
        if placement.vm is not None:
            return self._mark_starting(job, placement)
        reason = placement.reason or "no free VM"
        stored = self._note_queued(job, reason)
        logger.info(
            "job stays queued: %s", reason, extra={"job_id": job.job_id, "tried": placement.tried}
        )
        return DispatchOutcome(stored, False, reason=reason, tried=placement.tried)

    def _mark_starting(self, job: Job, placement: Placement) -> DispatchOutcome:
        vm = placement.vm
        assert vm is not None
        now = self._clock.now()
        applied = False

        def mutate(current: Job) -> Job | None:
            nonlocal applied
            applied = current.state is JobState.QUEUED and current.attempt == job.attempt
            if not applied:
                return None
            return transition(
                current, JobState.STARTING, now, vm=vm, dispatched_at=now, queued_reason=None
            )

        stored = self._store.update_job(job.job_id, mutate)
        if applied:
            logger.info(
                "start requested", extra={"job_id": job.job_id, "vm": vm.name, "zone": vm.zone}
            )
            return DispatchOutcome(stored, True, vm=vm, tried=placement.tried)
        logger.info(
            "job left queued during dispatch; stopping the VM",
            extra={"job_id": job.job_id, "vm": vm.name, "state": stored.state.value},
        )
        self._placer.undo(job, placement)
        return DispatchOutcome(
            stored, False, reason=f"job is {stored.state.value}", tried=placement.tried
        )

    def _note_queued(self, job: Job, reason: str) -> Job:
        def mutate(current: Job) -> Job | None:
            if current.state is not JobState.QUEUED or current.queued_reason == reason:
                return None
            return current.model_copy(update={"queued_reason": reason})

        if job.queued_reason == reason:
            return job
        return self._store.update_job(job.job_id, mutate)


def dispatch_job(
    job: Job, *, store: JobStore, fleet: Fleet, clock: Clock, settings: Any
) -> DispatchOutcome:
    """Convenience: dispatch one stored, queued job."""
    return Dispatcher(store, fleet, clock, settings).dispatch(job)
