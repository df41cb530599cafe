"""Dispatch: give queued jobs a free VM and request its start (the API and the reaper).

The VM side (lease, check, start) is `_placement.Placer`; the job document moves in the same
commits as the lease (`_job_leases.JobLeases`): queued -> starting with `vm` and
`dispatched_at` in the commit that leases the VM, back to queued (with `queued_reason`) in the
one that gives a refused VM's lease back. A job that left `queued` meanwhile (cancelled, or
claimed by a draining worker) is seen in the read before the commit and left alone.

The submit path uses `place_new` instead: the job is not stored yet, so the lease commit
creates it directly in its first state (see services/submit.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from comfyburst.domain import gpu_classes
from comfyburst.domain.jobs import FREE_PREEMPTIONS, onto_fallback
from comfyburst.ports import Clock, Fleet, JobStore
from comfyburst.schema import Job, VmRef
from comfyburst.services._fleet_view import DEFAULT_MAX_AGE_S
from comfyburst.services._job_leases import JobGone, JobLeases
from comfyburst.services._placement import (
    METADATA_CONFIG_KEY,
    REASON_ERROR,
    Placement,
    Placer,
    PoolView,
    pass_began,
    request_id,
)
from comfyburst.states import JobState

logger = logging.getLogger(__name__)

__all__ = [
    "METADATA_CONFIG_KEY",
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
        retires: bool = False,
    ) -> None:
        """`io` runs a placement's independent calls (and the submit's request write) side by
        side; the entry point passes the process's pool (wiring.io_pool). Without one, this
        dispatcher makes its own. `retires`: it may delete a stopped VM in a stocked-out zone
        to make room (the reaper's; the API's identity cannot delete VMs)."""
        self._store = store
        self._clock = clock
        self.io = io or ThreadPoolExecutor(max_workers=32, thread_name_prefix="dispatch-io")
        self._classes = gpu_classes.for_settings(settings)
        self._placer = Placer(store, fleet, settings, self.io, view_max_age_s, retires)

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
                job = self._onto_fallback(job)
                outcome, view = self._place_stored(job, began, view)
                outcomes.append(outcome)
            except Exception:
                # One job's failure must not stop the others; it stays queued for the reaper.
                logger.exception("dispatch failed", extra={"job_id": job.job_id})
                outcomes.append(DispatchOutcome(job, False, reason=REASON_ERROR))
        return outcomes

    def place_new(
        self,
        job: Job,
        before_commit: Callable[[], object] | None = None,
        hold: str | None = None,
    ) -> Placement:
        """Place a job that is not stored yet, creating it in its first state (`placement.job`):
        `starting` in the commit that leases its VM, else `queued` with the reason.

        `before_commit` runs before the job is first written (no job without its request).
        `hold`: the job may not start now (its caller is at `max_running`): it is created
        `queued` with this reason, no VM tried. Raises JobExists when the job is stored already
        (a retried submit).
        """
        now = self._clock.now()
        leases = JobLeases(self._store, job, now, create=True, before_commit=before_commit)
        began = pass_began()
        if hold is not None:
            placement = Placement(None, hold)
        else:
            try:
                view = self._placer.view()
            except Exception:
                logger.exception("dispatch could not read the pool", extra={"job_id": job.job_id})
                placement = Placement(None, REASON_ERROR)
            else:
                placement, _ = self._placer.place(job, now, began, view, leases)
        if placement.vm is None:
            placement.job = leases.settle(placement.reason or "no free VM")
        return placement

    # --- job documents ---------------------------------------------------------------------

    def _onto_fallback(self, job: Job) -> Job:
        """A queued job whose Spot preemptions reached the cap goes to the fallback class. The
        worker moves it when it requeues; this covers one whose config named no fallback."""
        target = self._classes.fallback_after(job.gpu_class, job.preemptions, FREE_PREEMPTIONS)
        if target is None:
            return job

        def mutate(current: Job) -> Job | None:
            if current.state is not JobState.QUEUED or current.gpu_class != job.gpu_class:
                return None
            return onto_fallback(current, target)

        return self._store.update_job(job.job_id, mutate)

    def _place_stored(
        self, job: Job, began: float, view: PoolView
    ) -> tuple[DispatchOutcome, PoolView]:
        now = self._clock.now()
        leases = JobLeases(self._store, job, now, create=False)
        try:
            placement, view = self._placer.place(job, now, began, view, leases)
        except JobGone as gone:
            # Claimed by a draining worker or cancelled meanwhile: nothing was leased for it.
            stored = gone.job
            return DispatchOutcome(stored, False, reason=f"job is {stored.state.value}"), view
        if placement.vm is not None:
            vm = placement.vm
            logger.info(
                "start requested", extra={"job_id": job.job_id, "vm": vm.name, "zone": vm.zone}
            )
            return DispatchOutcome(leases.job, True, vm=vm, tried=placement.tried), view
        reason = placement.reason or "no free VM"
        stored = leases.settle(reason)
        logger.info(
            "job stays queued: %s", reason, extra={"job_id": job.job_id, "tried": placement.tried}
        )
        return DispatchOutcome(stored, False, reason=reason, tried=placement.tried), view


def dispatch_job(
    job: Job, *, store: JobStore, fleet: Fleet, clock: Clock, settings: Any
) -> DispatchOutcome:
    """Convenience: dispatch one stored, queued job."""
    return Dispatcher(store, fleet, clock, settings).dispatch(job)
