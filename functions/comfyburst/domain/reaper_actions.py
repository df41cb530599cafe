"""The reaper's actions: plain data the planner returns and the executor applies.

Actions that change a job carry the state and attempt it was seen in (the executor skips them
when the job changed meanwhile); VM actions with `after_job` run only if that job action was
applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from comfyburst.states import JobState


@dataclass(frozen=True)
class StopVm:
    name: str
    zone: str
    reason: str
    after_job: str | None = None


@dataclass(frozen=True)
class ReleaseLease:
    vm_name: str
    job_id: str
    reason: str
    after_job: str | None = None


@dataclass(frozen=True)
class CooldownVm:
    vm_name: str
    zone: str
    until: datetime
    reason: str


@dataclass(frozen=True)
class RequeueJob:
    job_id: str
    seen_state: JobState
    seen_attempt: int
    reason: str


@dataclass(frozen=True)
class FailJob:
    job_id: str
    seen_state: JobState
    seen_attempt: int
    error_type: str
    message: str


@dataclass(frozen=True)
class TimeOutJob:
    job_id: str
    seen_state: JobState
    seen_attempt: int
    message: str


@dataclass(frozen=True)
class CancelJob:
    job_id: str
    seen_state: JobState
    seen_attempt: int
    reason: str


@dataclass(frozen=True)
class CompleteFromDoneFlag:
    """The worker finished this attempt (its done flag exists) but no done event completed the
    job: complete it from the flag, through the done-flag use case."""

    job_id: str
    seen_state: JobState
    seen_attempt: int
    reason: str


@dataclass(frozen=True)
class DispatchJob:
    job_id: str


JobAction = RequeueJob | FailJob | TimeOutJob | CancelJob
VmAction = StopVm | ReleaseLease | CooldownVm
Action = JobAction | CompleteFromDoneFlag | VmAction | DispatchJob
