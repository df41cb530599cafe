"""Phases and receipts of a job's run: pure, from timestamps the parts recorded.

The worker records its steps (guest boot to done) in the done manifest; the completion side
adds the dispatcher's request time (`Job.dispatched_at`) and Compute's `lastStartTimestamp`,
then prices the VM seconds at the job's GPU class. See docs/ARCHITECTURE.md, "Phases and
receipts", for what each field covers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from comfyburst.domain.gpu_classes import DERIVED_CLASS_NAME, GpuClasses
from comfyburst.schema import Job, JobPhases, Receipt

_COST_DIGITS = 6  # a millionth of a dollar: finer than any GPU price per second


def _span_s(start: datetime | None, end: datetime | None) -> float:
    """Seconds from start to end; 0 when either is unknown or the clocks disagree."""
    if start is None or end is None:
        return 0.0
    return round(max(0.0, (end - start).total_seconds()), 3)


def merge_phases(job: Job, worker: JobPhases | None, running_at: datetime | None) -> JobPhases:
    """The job's phases: the worker's, with the dispatcher's request and Compute's RUNNING.

    A job claimed without a boot (by a VM already up) keeps neither: its VM was started for
    another job, so that boot is not this job's.
    """
    phases = worker or JobPhases()
    booted = phases.guest_booted_at is not None or phases.agent_up_at is not None
    if not booted:
        return phases.model_copy(update={"requested_at": None, "running_at": None})
    # RUNNING before the request is a lastStartTimestamp of an earlier boot: not this one.
    requested = job.dispatched_at
    if running_at is not None and requested is not None and running_at < requested:
        running_at = None
    return phases.model_copy(update={"requested_at": requested, "running_at": running_at})


def class_price(
    classes: GpuClasses, job_class: str | None, derived_price: float
) -> tuple[str, float]:
    """The job's class and its USD per VM hour; ValueError for a class the deployment lacks.

    The one class derived from the pool_* settings (none declared) has no price of its own:
    `pool_price_per_hour` prices it.
    """
    found = classes.get(job_class)
    if found is None:
        raise ValueError(f"unknown GPU class {job_class!r}")
    derived = len(classes.classes) == 1 and found.name == DERIVED_CLASS_NAME
    if derived and not found.price_per_hour:
        return found.name, derived_price
    return found.name, found.price_per_hour


def class_pricer(classes: GpuClasses, derived_price: float) -> Callable[[str], float]:
    """A class's USD per VM hour by name; 0 for a class the deployment no longer has."""

    def price(name: str) -> float:
        try:
            return class_price(classes, name, derived_price)[1]
        except ValueError:
            return 0.0

    return price


def job_pricer(classes: GpuClasses, derived_price: float) -> Callable[[Job], tuple[str, float]]:
    """What the completion asks for a job's receipt: its class and that class's price."""
    return lambda job: class_price(classes, job.gpu_class, derived_price)


def cost_usd(seconds: float, price_per_hour: float) -> float:
    return round(seconds * price_per_hour / 3600.0, _COST_DIGITS)


def receipt_of(phases: JobPhases, gpu_class: str, price_per_hour: float) -> Receipt:
    """The receipt of a run from its phases (see `Receipt` for what each part covers)."""
    boot_from = phases.running_at or phases.guest_booted_at or phases.agent_up_at
    boot_s = _span_s(boot_from, phases.claimed_at)
    # A VM held warm before the claim: only the drain before the hold is this job's idle.
    idle_end = phases.claimed_at
    if phases.warm_since_at is not None and idle_end is not None:
        idle_end = min(phases.warm_since_at, idle_end)
    idle_s = _span_s(phases.idle_since_at, idle_end)
    run_s = _span_s(phases.claimed_at, phases.done_at)
    billed_s = round(boot_s + idle_s + run_s, 3)
    return Receipt(
        gpu_class=gpu_class,
        price_per_hour=price_per_hour,
        boot_s=boot_s,
        idle_s=idle_s,
        run_s=run_s,
        billed_s=billed_s,
        cost_usd=cost_usd(billed_s, price_per_hour),
    )


def shown_receipt(job: Job) -> Receipt | None:
    """The receipt as `GET /jobs/{id}` shows it: with the idle after the job, once known."""
    if job.receipt is None or job.idle_after_s is None:
        return job.receipt
    return with_idle_after(job.receipt, job.idle_after_s)


def with_idle_after(receipt: Receipt, idle_after_s: float) -> Receipt:
    """The receipt with the VM's idle time after the job (until it powered off)."""
    idle = round(max(0.0, idle_after_s), 3)
    return receipt.model_copy(
        update={
            "idle_after_s": idle,
            "idle_after_cost_usd": cost_usd(idle, receipt.price_per_hour),
        }
    )
