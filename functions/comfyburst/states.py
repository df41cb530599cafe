"""Job states and the one transition table every state change goes through."""

from __future__ import annotations

from enum import Enum

from comfyburst.errors import IllegalTransition


class JobState(str, Enum):
    QUEUED = "queued"  # accepted, waiting for a free VM
    STARTING = "starting"  # a VM is leased and its start requested; the worker has not claimed yet
    RUNNING = "running"  # a worker claimed the job and drives ComfyUI
    SUCCEEDED = "succeeded"  # done flag says success; outputs uploaded
    FAILED = "failed"  # validation/execution error, bad manifest, or attempts spent
    CANCELLED = "cancelled"  # cancelled by the caller
    TIMED_OUT = "timed_out"  # past its deadline

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def live(self) -> bool:
        return self in (JobState.STARTING, JobState.RUNNING)


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)

# queued -> running is the draining worker claiming the next job on a VM that is already up.
# starting/running -> queued is the retry of a retryable infrastructure fault (attempt + 1).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset(
        {
            JobState.STARTING,
            JobState.RUNNING,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
            JobState.FAILED,
        }
    ),
    JobState.STARTING: frozenset(
        {
            JobState.RUNNING,
            JobState.QUEUED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
        }
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.QUEUED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
        }
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
}


def can_transition(current: JobState, target: JobState) -> bool:
    """True when the table allows current -> target."""
    return target in TRANSITIONS[current]


def check_transition(current: JobState, target: JobState) -> None:
    """Raise IllegalTransition unless the table allows current -> target."""
    if not can_transition(current, target):
        raise IllegalTransition(current.value, target.value)
