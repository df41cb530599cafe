"""Structured log lines for the operators' dashboard (see domain/ops_metrics.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from comfyburst.domain.gpu_classes import GpuClasses
from comfyburst.domain.ops_metrics import job_ended_fields, job_phase_fields, pool_gauges
from comfyburst.ports import VmStatus
from comfyburst.schema import Job, VmRecord

log = logging.getLogger("comfyburst.ops")


def log_job_ended(job: Job) -> None:
    """A terminal job's `job_ended` line and one `job_phase` line per phase of its run."""
    fields = job_ended_fields(job)
    log.info("job %s ended %s", job.job_id, job.state.value, extra=fields)
    for phase in job_phase_fields(job):
        log.info("job %s phase %s", job.job_id, phase["phase"], extra=phase)


def log_pool_gauges(
    jobs: Iterable[Job],
    vms: Iterable[VmRecord],
    fleet: list[VmStatus],
    now: datetime,
    classes: GpuClasses | None,
) -> None:
    """One `pool_gauges` line per GPU class, as the reaper saw the pool this period."""
    by_vm = {vm.name: classes.of_vm(vm.labels) for vm in fleet} if classes else None
    for row in pool_gauges(jobs, vms, fleet, now, by_vm):
        log.info("pool %s: %s queued", row["gpu_class"], row["queued"], extra=row)
