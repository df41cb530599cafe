"""The reaper planner's last step (`domain/reaper.py`): which queued jobs it dispatches this
period, onto the VMs free once its own actions are applied, as placement would pick them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from comfyburst.domain import dispatch_rule, fair_share
from comfyburst.domain._reaper_policy import ReaperPolicy, age_s
from comfyburst.domain.gpu_classes import build
from comfyburst.domain.reaper_actions import DispatchJob
from comfyburst.domain.reaper_room import create_room
from comfyburst.domain.scheduling import is_free
from comfyburst.ports import VmStatus
from comfyburst.schema import Job, VmRecord
from comfyburst.states import JobState

# Without the deployment's classes (older callers, tests): every VM and job in one class.
_ONE_CLASS = build([], None, None)


@dataclass(frozen=True)
class Fleet:
    """The VMs as the planner leaves them: Compute's statuses, their documents, those it cools
    down (not free) and those whose lease it releases (free once released)."""

    statuses: Mapping[str, VmStatus]
    records: Mapping[str, VmRecord]
    cooling: set[str]
    releasing: set[str]

    def after_release(self, name: str) -> VmRecord | None:
        record = self.records.get(name)
        if record is not None and name in self.releasing:
            return record.model_copy(update={"lease": None})
        return record

    def free_labels(self, now: datetime) -> list[dict[str, str]]:
        return [
            status.labels
            for name, status in self.statuses.items()
            if name not in self.cooling and is_free(status, self.after_release(name), now)
        ]


def dispatches_of(
    jobs: list[Job],
    requeued: set[str],
    ending: set[str],
    fleet: Fleet,
    now: datetime,
    policy: ReaperPolicy,
    served: fair_share.ServedByClass | None = None,
) -> list[DispatchJob]:
    """The queued jobs (past the dispatch grace, or requeued this period) to dispatch;
    `served`: when each waiting caller's latest job of a class started (fair share's
    tie-break, looked up by services/_fair_served.py)."""
    grace = policy.dispatch_grace_s
    queued = [
        j
        for j in jobs
        if (
            j.state is JobState.QUEUED
            and not j.cancel_requested
            and j.job_id not in ending
            and (age_s(j.state_changed_at, now) or 0.0) >= grace
        )
        or j.job_id in requeued  # retried at once, on another VM, if one is free
    ]
    # A free VM goes to a job of its own class (domain/dispatch_rule.py), as placement does.
    classes = policy.classes or _ONE_CLASS
    room: dict[str, int] = {}
    if policy.classes is not None:
        room = create_room(classes, list(fleet.statuses.values()), fleet.records, now)
    per_class = dispatch_rule.free_by_class(classes, fleet.free_labels(now))
    # Fair share between callers (domain/fair_share.py): who runs fewest goes first, then
    # who was served least recently in the class.
    running = fair_share.running_by_caller(j for j in jobs if j.job_id not in ending)
    limits = policy.caller_limits
    max_running = limits.max_running if limits is not None else fair_share.no_limit
    picked = dispatch_rule.pick(
        queued, per_class, room, classes, running, max_running, policy.dispatch_order, served
    )
    return [DispatchJob(j.job_id) for j in picked]
