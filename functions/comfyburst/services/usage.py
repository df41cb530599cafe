"""Usage in money (`GET /usage`) and the monthly budget check of submit (domain/usage.py).

Both read the same thing the same way: the receipts of the caller's terminal jobs finished in
a range, from the job documents (adapters/firestore_usage.py). `GET /usage` reads at most
`MAX_USAGE_JOBS` of them per answer (a larger range answers 422 `usage_range_too_large`:
narrow it, or group by day over shorter ranges). The budget check reads the caller's jobs of
the month so far, and stops as soon as their sum reaches the budget; it runs only for a caller
with a budget. Neither counts a job document that expired (terraform `job_ttl_days`): usage
older than that is not kept, and a budget needs `job_ttl_days` of at least 31 to see a whole
month.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from comfyburst.domain import tenancy
from comfyburst.domain.caller_limits import Limits
from comfyburst.domain.usage import (
    GroupBy,
    UsageEntry,
    UsageQuery,
    UsageReport,
    WarmIdleEntry,
    check_budget,
    month_start,
    parse_query,
    report,
)
from comfyburst.errors import InvalidRequest
from comfyburst.schema import Job
from comfyburst.states import JobState

MAX_USAGE_JOBS = 100_000
_T = TypeVar("_T")


class UsageRangeTooLarge(InvalidRequest):
    """More terminal jobs in the range than one answer reads."""

    code = "usage_range_too_large"
    http_status = 422


def get_usage(
    views: Any,
    args: Mapping[str, Sequence[str]],
    now: datetime,
    *,
    caller: str | None,
    admins: Collection[str],
    price_of: Callable[[str], float] | None = None,
) -> UsageReport:
    """The usage table: the caller's own jobs; an admin's: every caller's, and the warm VMs'
    idle (priced by `price_of(gpu_class)`)."""
    query = parse_query(args, now, caller, all_callers=tenancy.is_admin(caller, admins))
    # Read only when iterated: `report` takes the warm stretches in an admin's report only.
    warm = _warm_entries(views, query, price_of)
    return report(query, _bounded(_entries(views, None, query), "jobs finished"), warm)


def _warm_entries(
    views: Any, query: UsageQuery, price_of: Callable[[str], float] | None
) -> Iterator[WarmIdleEntry]:
    read = getattr(views, "warm_idle_entries", None)
    if read is None:
        return
    for stretch in _bounded(read(query.start, query.end), "warm stretches ended"):
        price = price_of(stretch.gpu_class) if price_of is not None else 0.0
        yield WarmIdleEntry(stretch.gpu_class, stretch.ended_at, stretch.idle_s, price)


def check_monthly_budget(
    views: Any, store: Any, caller: str | None, limits: Limits, now: datetime
) -> None:
    """BudgetExceeded when the caller's receipts this month (UTC) reach its budget."""
    budget = limits.monthly_budget_usd
    if budget is None:
        return
    query = UsageQuery(month_start(now), now, group_by=GroupBy.CALLER, caller=caller)
    spent_micro = 0
    for entry in _entries(views, store, query):
        spent_micro += round(entry.receipt.cost_usd * 1_000_000)
        if spent_micro >= round(budget * 1_000_000):
            break
    check_budget(budget, spent_micro / 1_000_000, now)


def _bounded(items: Iterable[_T], what: str) -> Iterator[_T]:
    """`items`, refused past MAX_USAGE_JOBS of them (422 usage_range_too_large)."""
    for n, item in enumerate(items, start=1):
        if n > MAX_USAGE_JOBS:
            raise UsageRangeTooLarge(
                f"more than {MAX_USAGE_JOBS} {what} between from and to; ask for a shorter range",
                field="from",
                details={"max_jobs": MAX_USAGE_JOBS},
            )
        yield item


def _entries(views: Any, store: Any, query: UsageQuery) -> Iterator[UsageEntry]:
    read = getattr(views, "usage_entries", None)
    if read is not None:
        yield from read(query.caller, query.start, query.end, all_callers=query.all_callers)
        return
    # Without the Firestore views (in-memory fakes): the store's terminal jobs, filtered.
    terminal = [s for s in JobState if s.terminal]
    for job in sorted(store.list_jobs(terminal, limit=None), key=_finished):
        entry = entry_of(job)
        if entry is None or not query.start <= entry.finished_at < query.end:
            continue
        if query.all_callers or job.caller == query.caller:
            yield entry


def entry_of(job: Job) -> UsageEntry | None:
    """What usage counts of a job: its receipt, once terminal."""
    if job.receipt is None or job.finished_at is None or not job.state.terminal:
        return None
    return UsageEntry(job.caller, job.finished_at, job.receipt, job.idle_after_s)


def _finished(job: Job) -> datetime:
    return job.finished_at or job.created_at
