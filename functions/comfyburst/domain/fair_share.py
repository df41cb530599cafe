"""Which caller's queued job starts next: fair share between callers, not first come first served.

The rule, one step at a time: of the callers with a queued job that may start, the one with
the fewest jobs running now goes next, with its oldest queued job; ties go to the caller whose
next job is the oldest. Each job chosen counts as running for the following steps, so callers
take turns (round-robin) and one caller's long backlog never holds back another's one job. A
caller at its `max_running` (domain/caller_limits.py) is skipped: its jobs wait in `queued`,
they are not refused, and everyone else's go ahead.

`order` ranks every queued job (the draining worker tries them in that order); `pick` chooses
the jobs to dispatch when each GPU class has room for only so many (the reaper, through
domain/dispatch_rule.py). Both run the same steps. `queued` comes oldest first (the order
is the age the ties go by). Pure: the callers count what is running.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, TypeVar

from comfyburst.states import JobState

# The states that count as running for the share and the limit: a `starting` job holds its VM.
RUNNING_STATES = frozenset({JobState.STARTING, JobState.RUNNING})

MaxRunning = Callable[[str | None], int | None]


class FairJob(Protocol):
    """What the rule reads of a queued job."""

    @property
    def caller(self) -> str | None: ...


class LiveJob(Protocol):
    """What `running_by_caller` reads of a job."""

    @property
    def state(self) -> JobState: ...

    @property
    def caller(self) -> str | None: ...


J = TypeVar("J", bound=FairJob)


def no_limit(caller: str | None) -> int | None:
    """`max_running` when the deployment sets none."""
    return None


def from_table(table: Mapping[str, int]) -> MaxRunning:
    """`max_running` from {principal: limit} with `*` for everyone else (DeploymentConfig's
    `running_limits`, caller_limits.CallerLimits.running_limits)."""

    def max_running(caller: str | None) -> int | None:
        return table.get(caller or "*", table.get("*"))

    return max_running


def running_by_caller(jobs: Iterable[LiveJob]) -> dict[str | None, int]:
    """{caller: jobs starting or running}, from a listing of live jobs."""
    counts: dict[str | None, int] = {}
    for job in jobs:
        if job.state in RUNNING_STATES:
            counts[job.caller] = counts.get(job.caller, 0) + 1
    return counts


def order(
    queued: Iterable[J],
    running: Mapping[str | None, int],
    max_running: MaxRunning = no_limit,
) -> list[J]:
    """The queued jobs (given oldest first) in the order the rule starts them; jobs of a
    caller that would pass its `max_running` are left out."""
    return list(_turns(queued, running, max_running))


def pick(
    queued: Iterable[J],
    running: Mapping[str | None, int],
    room: Mapping[str, int],
    class_of: Callable[[J], str],
    max_running: MaxRunning = no_limit,
) -> list[J]:
    """The jobs to dispatch, in the rule's order, at most `room[class]` of each class."""
    return list(_turns(queued, running, max_running, room, class_of))


def _turns(
    queued: Iterable[J],
    running: Mapping[str | None, int],
    max_running: MaxRunning,
    room: Mapping[str, int] | None = None,
    class_of: Callable[[J], str] | None = None,
) -> Iterator[J]:
    # Each caller's jobs, oldest first, with their place in the queue (the age ties go by).
    waiting: dict[str | None, deque[tuple[int, J]]] = {}
    for place, job in enumerate(queued):
        waiting.setdefault(job.caller, deque()).append((place, job))
    counts = dict(running)
    left = dict(room) if room is not None else None
    # One heap entry per caller: (running, place of its next job, caller's index). A step pops
    # the least; O(log callers) a step, so ranking n jobs is O(n log callers).
    callers = list(waiting)
    heap = [(counts.get(c, 0), waiting[c][0][0], i) for i, c in enumerate(callers)]
    heapq.heapify(heap)
    while heap:
        count, _, index = heapq.heappop(heap)
        caller = callers[index]
        limit = max_running(caller)
        if limit is not None and count >= limit:
            continue  # at its limit: its jobs wait
        jobs = waiting[caller]
        _, job = jobs.popleft()
        if left is not None and class_of is not None:
            name = class_of(job)
            if left.get(name, 0) <= 0:  # its class has no room left in this pass: skip it
                if jobs:
                    heapq.heappush(heap, (count, jobs[0][0], index))
                continue
            left[name] -= 1
        counts[caller] = count + 1
        if left is not None and all(n <= 0 for n in left.values()):
            yield job
            return  # no class has room: nothing more to pick
        if jobs:
            heapq.heappush(heap, (count + 1, jobs[0][0], index))
        yield job
