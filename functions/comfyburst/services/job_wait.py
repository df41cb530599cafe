"""Waiting: `GET /jobs/{id}?wait_s=N` answers when the job's state or progress changes, or
after N seconds with the job as it is; a terminal job answers at once.

The store pushes changes (Firestore `on_snapshot`, a listen stream per waiter): no polling and
one document read per change instead of one per poll. The listener's first snapshot is the
document as it is when the listen starts, so a change between our read and the listen is not
missed: it already differs from what was read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from comfyburst.domain.query_args import single_arg
from comfyburst.errors import InvalidRequest
from comfyburst.schema import Job

MAX_WAIT_S = 60.0


class JobWatcher(Protocol):
    def wait_for(self, job_id: str, changed: Callable[[Job], bool], timeout_s: float) -> Job | None:
        """Block until a version of the job satisfies `changed` and return it; when the time
        is up, return the latest version seen (None if none came)."""
        ...


def observed(job: Job) -> tuple[Any, ...]:
    """What a waiter watches: the state and the progress (and a requested cancel)."""
    return (job.state, job.progress.model_dump(), job.cancel_requested, job.attempt)


def parse_wait_s(args: Mapping[str, Sequence[str]]) -> float | None:
    """`wait_s` of a GET /jobs/{id}: None when absent; 0 to 60 seconds, else 400."""
    value = single_arg(args, "wait_s")
    if value is None:
        return None
    try:
        wait_s = float(value)
    except ValueError:
        wait_s = -1.0
    if not 0.0 <= wait_s <= MAX_WAIT_S:  # also refuses NaN
        raise InvalidRequest(
            f"wait_s must be a number of seconds from 0 to {MAX_WAIT_S:g}", field="wait_s"
        )
    return wait_s


def wait_for_change(watcher: JobWatcher, job: Job, wait_s: float) -> Job:
    """The job once it differs from `job` in what a waiter watches, or `job` after `wait_s`."""
    if job.state.terminal or wait_s <= 0:
        return job
    before = observed(job)
    changed = watcher.wait_for(job.job_id, lambda current: observed(current) != before, wait_s)
    return changed or job
