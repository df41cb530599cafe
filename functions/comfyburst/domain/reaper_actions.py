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


@dataclass(frozen=True)
class StartWarmVm:
    """Start a stopped VM to keep warm: its lease goes to the drain marker until `lease_until`
    (so the booting VM is no one's to take), then Compute starts it."""

    name: str
    zone: str
    lease_until: datetime
    reason: str


@dataclass(frozen=True)
class StopWarmVm:
    """Stop an idle warm VM: only while its lease is still `warm_lease` (its worker took no job
    meanwhile), which is first swapped for a stop marker its worker cannot claim past."""

    name: str
    zone: str
    warm_lease: str
    reason: str


JobAction = RequeueJob | FailJob | TimeOutJob | CancelJob
VmAction = StopVm | ReleaseLease | CooldownVm
WarmAction = StartWarmVm | StopWarmVm
Action = JobAction | CompleteFromDoneFlag | VmAction | DispatchJob | WarmAction
