"""The reaper's look-up of when waiting callers were last served (domain/fair_share.py's
tie-break after the running count), made only for the classes its plan dispatches to."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from comfyburst.domain import fair_share
from comfyburst.domain.reaper import DispatchJob, ReaperPolicy
from comfyburst.ports import JobStore
from comfyburst.schema import Job
from comfyburst.states import JobState

log = logging.getLogger(__name__)


def served_for(
    store: JobStore, jobs: list[Job], actions: Iterable[object], policy: ReaperPolicy, now: datetime
) -> dict[tuple[str | None, str], datetime]:
    """{(caller, class): when its latest job of the class started} for the waiting callers of
    each class the plan dispatches to but not all of whose queued jobs it dispatches (where
    all go, the order cannot change which), by `fair_share.last_served`. Empty under fifo,
    with nothing dispatched, or when the store cannot say (ties then go by age alone, as
    placement's plan without it)."""
    classes, scan = policy.classes, getattr(store, "last_started", None)
    fair = policy.dispatch_order is fair_share.DispatchOrder.FAIR
    if not fair or classes is None or scan is None:
        return {}
    by_id = {j.job_id: j for j in jobs}
    dispatched = Counter(
        classes.of_job(by_id[a.job_id].gpu_class)
        for a in actions
        if isinstance(a, DispatchJob) and a.job_id in by_id
    )
    running = fair_share.running_by_caller(jobs)
    limits = policy.caller_limits
    max_running = limits.max_running if limits is not None else fair_share.no_limit
    served: dict[tuple[str | None, str], datetime] = {}
    for name in sorted(dispatched):
        queued = [
            j for j in jobs if j.state is JobState.QUEUED and classes.of_job(j.gpu_class) == name
        ]
        if dispatched[name] >= len(queued):
            continue
        try:
            found = fair_share.last_served(scan, name, queued, running, now, max_running)
        except Exception as exc:
            log.warning("looking up when %s's callers were last served failed: %s", name, exc)
            return {}
        served.update({(c, name): at for c, at in found.items()})
    return served
