"""Which caller's queued job starts next: fair share between callers, not first come first served.

The rule, one step at a time: of the callers with a queued job that may start, the one with
the fewest jobs running now goes next, with its oldest queued job; ties go to the caller served
least recently in the job's class (`served`: when its latest job of the class started; a
caller never served first), then to the caller whose next job is the oldest. Each job chosen
counts as running, and as served just now, for the following steps, so callers take turns
(round-robin) and one caller's long backlog never holds back another's one job, even when
nobody runs anything (one VM that finished a job of the heavy caller takes the light one's
next). A caller at its `max_running` (domain/caller_limits.py) is skipped: its jobs wait in
`queued`, they are not refused, and everyone else's go ahead.

`order` ranks every queued job (the draining worker tries them in that order); `pick` chooses
the jobs to dispatch when each GPU class has room for only so many (the reaper, through
domain/dispatch_rule.py). Both run the same steps. `queued` comes oldest first (the order
is the age the ties go by). Pure: the callers count what is running and look up when each
waiting caller was last served (a caller missing from `served` counts as never served).

The deployer may set `dispatch_order: fifo` (`DispatchOrder`) instead: the oldest queued job of
the class first, whoever's (the order before fair share), kept to compare the two on one
deployment; `max_running` still holds, running counts and `served` are ignored. Both places
read the same setting, so they agree.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Protocol, TypeVar

# The deployer's setting, defined with the deployment config a VM reads (re-exported here).
from comfyburst.schema import DispatchOrder as DispatchOrder
from comfyburst.states import JobState

# The states that count as running for the share and the limit: a `starting` job holds its VM.
RUNNING_STATES = frozenset({JobState.STARTING, JobState.RUNNING})

MaxRunning = Callable[[str | None], int | None]
# {caller: when its latest job of the class started}, for one class's queue (`order`).
Served = Mapping[str | None, datetime]
# {(caller, class name): when its latest job of that class started}, across classes (`pick`).
ServedByClass = Mapping[tuple[str | None, str], datetime]


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


class AgedJob(FairJob, Protocol):
    """What `lookup_order` reads of a queued job."""

    @property
    def created_at(self) -> datetime: ...


J = TypeVar("J", bound=FairJob)

# Waiting callers of a class whose last service a claimant looks up (one one-document query
# each, FirestoreJobStore.last_started); those past it count as served just now, so they never
# jump ahead of one looked up.
SERVED_LOOKUPS = 16


def lookup_order(
    queued: Iterable[AgedJob],
    running: Mapping[str | None, int],
    max_running: MaxRunning | None = None,
) -> list[str | None]:
    """One class's waiting callers that may start a job (below their `max_running`), likeliest
    next first (fewest running, then the oldest queued job): whose last service is worth
    looking up; [] when fewer than two may start (then nobody's matters)."""
    limit = max_running or no_limit
    oldest: dict[str | None, datetime] = {}
    for job in queued:
        cap = limit(job.caller)
        if cap is not None and running.get(job.caller, 0) >= cap:
            continue
        if job.caller not in oldest or job.created_at < oldest[job.caller]:
            oldest[job.caller] = job.created_at
    if len(oldest) < 2:
        return []
    return sorted(oldest, key=lambda c: (running.get(c, 0), oldest[c]))


LastStarted = Callable[[str, list[str | None]], Mapping[str | None, datetime]]


def last_served(
    scan: LastStarted,
    gpu_class: str,
    queued: Iterable[AgedJob],
    running: Mapping[str | None, int],
    now: datetime,
    max_running: MaxRunning | None = None,
) -> dict[str | None, datetime]:
    """When each waiting caller of `gpu_class` was last served (the tie-break after the running
    count), asked of `scan` (FirestoreJobStore.last_started) only when two or more callers may
    start, for the SERVED_LOOKUPS likeliest next; those past them count as served `now`, so
    they never jump ahead of one looked up. Raises what `scan` raises (the callers then rank
    by age alone)."""
    callers = lookup_order(queued, running, max_running)
    if not callers:
        return {}
    served = dict.fromkeys(callers[SERVED_LOOKUPS:], now)
    served.update(scan(gpu_class, callers[:SERVED_LOOKUPS]))
    return served


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
    dispatch_order: DispatchOrder = DispatchOrder.FAIR,
    served: Served | None = None,
) -> list[J]:
    """One class's queued jobs (given oldest first) in the order the rule starts them; jobs
    of a caller that would pass its `max_running` are left out."""
    by_class = {(caller, ""): at for caller, at in (served or {}).items()}
    return list(_turns(queued, running, max_running, dispatch_order, by_class))


def pick(
    queued: Iterable[J],
    running: Mapping[str | None, int],
    room: Mapping[str, int],
    class_of: Callable[[J], str],
    max_running: MaxRunning = no_limit,
    dispatch_order: DispatchOrder = DispatchOrder.FAIR,
    served: ServedByClass | None = None,
) -> list[J]:
    """The jobs to dispatch, in the rule's order, at most `room[class]` of each class."""
    return list(_turns(queued, running, max_running, dispatch_order, served or {}, room, class_of))


def _turns(
    queued: Iterable[J],
    running: Mapping[str | None, int],
    max_running: MaxRunning,
    dispatch_order: DispatchOrder,
    served: ServedByClass,
    room: Mapping[str, int] | None = None,
    class_of: Callable[[J], str] | None = None,
) -> Iterator[J]:
    # Each caller's jobs, oldest first, with their place in the queue (the age ties go by).
    waiting: dict[str | None, deque[tuple[int, J]]] = {}
    for place, job in enumerate(queued):
        waiting.setdefault(job.caller, deque()).append((place, job))
    counts = dict(running)
    left = dict(room) if room is not None else None
    klass = class_of or (lambda _job: "")
    # Served in this pass: (caller, class) -> step; later than anything `served` holds.
    now_served: dict[tuple[str | None, str], int] = {}
    fair = dispatch_order is DispatchOrder.FAIR

    def rank(caller: str | None, count: int, job: J) -> tuple[int, int, float]:
        """(running, when last served in the job's class) for fair; fifo ranks all alike."""
        if not fair:
            return (0, 0, 0.0)
        key = (caller, klass(job))
        if key in now_served:
            return (count, 2, float(now_served[key]))
        at = served.get(key)
        return (count, 0, 0.0) if at is None else (count, 1, at.timestamp())

    # One heap entry per caller: (rank, place of its next job, caller's index). A step pops
    # the least; O(log callers) a step, so ranking n jobs is O(n log callers). Only the
    # chosen caller's rank changes in a step, and it is pushed anew.
    callers = list(waiting)
    heap = []
    for i, c in enumerate(callers):
        place, head = waiting[c][0]
        heap.append((rank(c, counts.get(c, 0), head), place, i))
    heapq.heapify(heap)
    step = 0
    while heap:
        _, _, index = heapq.heappop(heap)
        caller = callers[index]
        count = counts.get(caller, 0)
        limit = max_running(caller)
        if limit is not None and count >= limit:
            continue  # at its limit: its jobs wait
        jobs = waiting[caller]
        _, job = jobs.popleft()
        if left is not None and class_of is not None:
            name = class_of(job)
            if left.get(name, 0) <= 0:  # its class has no room left in this pass: skip it
                if jobs:
                    heapq.heappush(heap, (rank(caller, count, jobs[0][1]), jobs[0][0], index))
                continue
            left[name] -= 1
        counts[caller] = count + 1
        step += 1
        now_served[(caller, klass(job))] = step
        if left is not None and all(n <= 0 for n in left.values()):
            yield job
            return  # no class has room: nothing more to pick
        if jobs:
            heapq.heappush(heap, (rank(caller, count + 1, jobs[0][1]), jobs[0][0], index))
        yield job
