"""The numbers operators chart, as the fields of structured log lines (pure).

Cloud Logging turns each line into a `jsonPayload`; the log-based metrics of
terraform/monitoring.tf count these lines and extract their fields. The field names below are
that contract: tests/test_deploy_monitoring.py checks every metric against lines the code emits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from comfyburst.domain.gpu_classes import CLASS_LABEL
from comfyburst.ports import VmStatus
from comfyburst.schema import Job, JobPhases, VmRecord
from comfyburst.states import JobState

# `event` values: one per kind of line, so a metric's filter selects exactly one kind.
JOB_ENDED = "job_ended"
JOB_PHASE = "job_phase"
POOL_GAUGES = "pool_gauges"

# The run's steps in order; a phase is named by the step that ends it and lasts from the
# latest earlier step recorded (a step a job skipped, e.g. the boot of a warm VM, is absent).
_STEPS = (
    ("requested_at", None),
    ("running_at", "vm_start"),
    ("guest_booted_at", "guest_boot"),
    ("agent_up_at", "agent_start"),
    ("claimed_at", "claim"),
    ("comfyui_ready_at", "comfyui_start"),
    ("environment_ready_at", "environment"),
    ("models_ready_at", "models"),
    ("first_step_at", "first_step"),
    ("done_at", "run"),
)
PHASES = tuple(name for _, name in _STEPS if name is not None)
DEFAULT_CLASS = "default"


def phase_seconds(phases: JobPhases | None) -> dict[str, float]:
    """Seconds of each phase the job went through, in run order."""
    if phases is None:
        return {}
    spans: dict[str, float] = {}
    latest: datetime | None = None
    for field, name in _STEPS:
        at = getattr(phases, field)
        if at is None:
            continue
        if latest is not None and name is not None:
            spans[name] = round(max(0.0, (at - latest).total_seconds()), 3)
        latest = at if latest is None else max(latest, at)
    return spans


def job_ended_fields(job: Job) -> dict[str, Any]:
    """The `job_ended` line of a terminal job: state, class and what its run cost."""
    receipt = job.receipt
    return {
        "event": JOB_ENDED,
        "job_id": job.job_id,
        "state": job.state.value,
        "gpu_class": job.gpu_class or (receipt.gpu_class if receipt else DEFAULT_CLASS),
        "billed_s": receipt.billed_s if receipt else 0.0,
        "cost_usd": receipt.cost_usd if receipt else 0.0,
    }


def job_phase_fields(job: Job) -> list[dict[str, Any]]:
    """One `job_phase` line per phase of the job's run (distribution metrics take one value)."""
    gpu_class = job.gpu_class or (job.receipt.gpu_class if job.receipt else DEFAULT_CLASS)
    return [
        {"event": JOB_PHASE, "job_id": job.job_id, "gpu_class": gpu_class, "phase": p, "seconds": s}
        for p, s in phase_seconds(job.phases).items()
    ]


def pool_gauges(
    jobs: Iterable[Job],
    vms: Iterable[VmRecord],
    fleet: Iterable[VmStatus],
    now: datetime,
    class_of_vm: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One `pool_gauges` line per GPU class: what the reaper saw in one period.

    `queued`: jobs waiting; `running_vms`: VMs Compute reports RUNNING; `unleased_running_vms`:
    of those, the ones no job and no draining worker holds; `past_deadline`: jobs not ended
    whose deadline has passed. `class_of_vm` overrides the VM label (tests, the derived class).
    """
    leased = {v.name for v in vms if v.is_leased(now)}
    rows: dict[str, dict[str, Any]] = {}

    def row(gpu_class: str) -> dict[str, Any]:
        return rows.setdefault(
            gpu_class,
            {
                "event": POOL_GAUGES,
                "gpu_class": gpu_class,
                "queued": 0,
                "running_vms": 0,
                "unleased_running_vms": 0,
                "past_deadline": 0,
            },
        )

    for job in jobs:
        found = row(job.gpu_class or DEFAULT_CLASS)
        if job.state is JobState.QUEUED:
            found["queued"] += 1
        if not job.state.terminal and now >= job.deadline_at:
            found["past_deadline"] += 1
    for vm in fleet:
        gpu_class = (class_of_vm or {}).get(vm.name) or vm.labels.get(CLASS_LABEL) or DEFAULT_CLASS
        found = row(gpu_class)
        if vm.status == "RUNNING":
            found["running_vms"] += 1
            if vm.name not in leased:
                found["unleased_running_vms"] += 1
    return [rows[name] for name in sorted(rows)]
