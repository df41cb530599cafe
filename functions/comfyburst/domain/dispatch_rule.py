"""Which queued jobs go to which VMs: the one rule that submit-time placement and the reaper share.

A VM serves the jobs of its own GPU class only (`serves`): a free VM of a class goes to the
oldest queued job of that class, never to an older job of another class. So a backlog on a
class with no free VM does not hold back a newer job of a class whose VM sits stopped and free.

`pick` is the reaper's side: given the queued jobs oldest first, how many free VMs each class
has and how many more jobs each class may dispatch by creating (or replacing) a VM, the jobs
to dispatch this period, oldest first. Placement (services/_placement.py) tries only VMs that
`serves` the job, so the two agree on every VM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from comfyburst.domain.gpu_classes import GpuClasses


class QueuedJob(Protocol):
    """What the rule reads of a job."""

    @property
    def job_id(self) -> str: ...

    @property
    def gpu_class(self) -> str | None: ...


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
) -> list[J]:
    """The jobs to dispatch, oldest first: per class, as many of its oldest jobs as it has free
    VMs, then as many more as it may create VMs for (`room`)."""
    left = {name: free.get(name, 0) + room.get(name, 0) for name in {*free, *room}}
    picked: list[J] = []
    for job in queued:
        name = classes.of_job(job.gpu_class)
        if left.get(name, 0) > 0:
            left[name] -= 1
            picked.append(job)
    return picked
