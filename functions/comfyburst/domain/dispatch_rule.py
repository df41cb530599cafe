"""Which queued jobs go to which VMs: the one rule that submit-time placement and the reaper share.

A VM serves the jobs of its own GPU class only (`serves`): a free VM of a class goes to a
queued job of that class, never to an older job of another class. So a backlog on a
class with no free VM does not hold back a newer job of a class whose VM sits stopped and free.

`pick` is the reaper's side: given the queued jobs, how many free VMs each class has and how
many more jobs each class may dispatch by creating (or replacing) a VM, the jobs to dispatch
this period, in the fair-share order between callers (domain/fair_share.py: the caller with
the fewest jobs running first, then the one served least recently in the class, each caller's
oldest job first; one at its `max_running` waits). Placement (services/_placement.py) tries
only VMs that `serves` the job, so the two agree on every VM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from comfyburst.domain import fair_share
from comfyburst.domain.gpu_classes import GpuClasses


class QueuedJob(Protocol):
    """What the rule reads of a job."""

    @property
    def job_id(self) -> str: ...

    @property
    def gpu_class(self) -> str | None: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def caller(self) -> str | None: ...


J = TypeVar("J", bound=QueuedJob)


def serves(classes: GpuClasses, vm_labels: Mapping[str, str], job_class: str | None) -> bool:
    """Whether a VM with these labels may run a job that recorded `job_class`."""
    return classes.of_vm(vm_labels) == classes.of_job(job_class)


def free_by_class(
    classes: GpuClasses, free_vm_labels: Iterable[Mapping[str, str]]
) -> dict[str, int]:
    """{class name: free VMs}, from the labels of the free VMs."""
    counts: dict[str, int] = {}
    for labels in free_vm_labels:
        name = classes.of_vm(labels)
        counts[name] = counts.get(name, 0) + 1
    return counts


def pick(
    queued: Sequence[J],
    free: Mapping[str, int],
    room: Mapping[str, int],
    classes: GpuClasses,
    running: Mapping[str | None, int] | None = None,
    max_running: fair_share.MaxRunning = fair_share.no_limit,
    dispatch_order: fair_share.DispatchOrder = fair_share.DispatchOrder.FAIR,
    served: fair_share.ServedByClass | None = None,
) -> list[J]:
    """The jobs to dispatch, in fair-share order (or the deployer's `dispatch_order`): per
    class, as many as it has free VMs, then as many more as it may create VMs for (`room`).
    `running`: {caller: jobs starting or running now}; `max_running`: each caller's limit
    (None: none); `served`: {(caller, class): when its latest job of the class started}."""
    left = {name: free.get(name, 0) + room.get(name, 0) for name in {*free, *room}}
    return fair_share.pick(
        queued,
        running or {},
        left,
        lambda job: classes.of_job(job.gpu_class),
        max_running,
        dispatch_order,
        served,
    )
