"""Usage in money: terminal jobs' receipts summed per caller, GPU class or day. Pure.

The totals are not counters: they are the receipts of the terminal job documents themselves,
read for a time range (adapters/firestore_usage.py), so completion writes nothing more and no
document is contended. A job counts in the range its `finished_at` (UTC) falls in, once it has
a receipt (a job ended without a done flag has none and costs nothing here). Amounts are added
as whole micro-dollars and milliseconds, the receipts' own precision, so a total is exactly the
sum of its receipts. The VM's idle after a caller's last job (`idle_after_s`, written later) is
shown apart and is not part of `cost_usd`, nor of what a budget counts.

Warm VMs (a class's warm schedule) idle for nobody: their stretches (schema.WarmIdle) are shown
apart too, to an admin only (`warm_idle_s`, `warm_idle_cost_usd`: in the class's row and the
day's row of the day the stretch ended, in a `(warm VMs)` row by caller, and in the total), at
the class's price; never in `cost_usd` or a budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from pydantic import BaseModel, Field

from comfyburst.domain.query_args import single_arg
from comfyburst.domain.receipts import cost_usd
from comfyburst.errors import BudgetExceeded, InvalidRequest
from comfyburst.schema import Receipt

# The longest range one `GET /usage` reads: a year and a day (a leap year's usage).
MAX_RANGE_DAYS = 367
# How long a warm stretch's document is kept (its `expire_at`, a Firestore TTL field).
WARM_IDLE_KEPT_DAYS = 400
_MICRO = 1_000_000
_MILLI = 1_000


class GroupBy(str, Enum):
    CALLER = "caller"  # one row per principal
    CLASS = "class"  # one row per GPU class whose price applied
    DAY = "day"  # one row per UTC date of finished_at


@dataclass(frozen=True)
class UsageEntry:
    """What usage reads of one terminal job document."""

    caller: str | None
    finished_at: datetime
    receipt: Receipt
    idle_after_s: float | None = None


@dataclass(frozen=True)
class WarmIdleEntry:
    """What usage reads of one warm stretch (schema.WarmIdle), with its class's price."""

    gpu_class: str
    ended_at: datetime
    idle_s: float
    price_per_hour: float


@dataclass(frozen=True)
class UsageQuery:
    """Terminal jobs finished in [start, end), of `caller` unless `all_callers`."""

    start: datetime
    end: datetime
    group_by: GroupBy
    caller: str | None
    all_callers: bool = False


class UsageRow(BaseModel):
    key: str = Field(description="The caller, the GPU class, or the UTC date (YYYY-MM-DD).")
    jobs: int = Field(description="Terminal jobs with a receipt.")
    boot_s: float
    idle_s: float
    run_s: float
    billed_s: float
    cost_usd: float = Field(description="The sum of the receipts' cost_usd.")
    idle_after_s: float = Field(description="Idle of the VMs after these jobs until power-off.")
    idle_after_cost_usd: float = Field(description="What that idle cost; not in cost_usd.")
    warm_idle_s: float = Field(
        default=0.0, description="Warm VMs' idle holding no job (an admin's usage only)."
    )
    warm_idle_cost_usd: float = Field(
        default=0.0, description="What that idle cost at the class's price; not in cost_usd."
    )


class UsageReport(BaseModel):
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    group_by: GroupBy
    all_callers: bool = Field(description="True: every caller's jobs (an admin asked).")
    rows: list[UsageRow]
    total: UsageRow


def month_start(now: datetime) -> datetime:
    """00:00 UTC on the first of `now`'s month (UTC): where month-to-date usage begins."""
    utc = now.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


def parse_query(
    args: Mapping[str, Sequence[str]], now: datetime, caller: str | None, *, all_callers: bool
) -> UsageQuery:
    """`GET /usage?from=&to=&group_by=`: from defaults to the month's start, to to now,
    group_by to caller. InvalidRequest (400, naming the field) for anything else."""
    for name in args:
        if name not in ("from", "to", "group_by"):
            raise InvalidRequest(f"unknown query parameter {name!r}", field=name)
    raw_group = single_arg(args, "group_by") or GroupBy.CALLER.value
    try:
        group_by = GroupBy(raw_group)
    except ValueError:
        names = ", ".join(g.value for g in GroupBy)
        raise InvalidRequest(
            f"group_by must be one of {names}, not {raw_group[:40]!r}", field="group_by"
        ) from None
    start = _time(args, "from") or month_start(now)
    end = _time(args, "to") or now
    if end <= start:
        raise InvalidRequest("to must be later than from", field="to")
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise InvalidRequest(
            f"from and to may be at most {MAX_RANGE_DAYS} days apart", field="from"
        )
    return UsageQuery(start, end, group_by, caller, all_callers)


def _time(args: Mapping[str, Sequence[str]], name: str) -> datetime | None:
    value = single_arg(args, name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("no zone")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{name} must be an RFC 3339 time with a zone, e.g. 2026-01-31T00:00:00Z", field=name
        ) from None


@dataclass
class _Sum:
    """Whole milliseconds and micro-dollars: adding them is exact."""

    jobs: int = 0
    boot_ms: int = 0
    idle_ms: int = 0
    run_ms: int = 0
    billed_ms: int = 0
    cost_micro: int = 0
    idle_after_ms: int = 0
    idle_after_micro: int = 0
    warm_idle_ms: int = 0
    warm_idle_micro: int = 0

    def add(self, entry: UsageEntry) -> None:
        r = entry.receipt
        self.jobs += 1
        self.boot_ms += round(r.boot_s * _MILLI)
        self.idle_ms += round(r.idle_s * _MILLI)
        self.run_ms += round(r.run_s * _MILLI)
        self.billed_ms += round(r.billed_s * _MILLI)
        self.cost_micro += round(r.cost_usd * _MICRO)
        if entry.idle_after_s is not None:
            idle = max(0.0, entry.idle_after_s)
            self.idle_after_ms += round(idle * _MILLI)
            self.idle_after_micro += round(cost_usd(idle, r.price_per_hour) * _MICRO)

    def add_warm(self, entry: WarmIdleEntry) -> None:
        self.warm_idle_ms += round(entry.idle_s * _MILLI)
        self.warm_idle_micro += round(cost_usd(entry.idle_s, entry.price_per_hour) * _MICRO)

    def row(self, key: str) -> UsageRow:
        return UsageRow(
            key=key,
            jobs=self.jobs,
            boot_s=self.boot_ms / _MILLI,
            idle_s=self.idle_ms / _MILLI,
            run_s=self.run_ms / _MILLI,
            billed_s=self.billed_ms / _MILLI,
            cost_usd=self.cost_micro / _MICRO,
            idle_after_s=self.idle_after_ms / _MILLI,
            idle_after_cost_usd=self.idle_after_micro / _MICRO,
            warm_idle_s=self.warm_idle_ms / _MILLI,
            warm_idle_cost_usd=self.warm_idle_micro / _MICRO,
        )


def group_key(entry: UsageEntry, group_by: GroupBy) -> str:
    if group_by is GroupBy.CALLER:
        return entry.caller or "(none)"
    if group_by is GroupBy.CLASS:
        return entry.receipt.gpu_class
    return entry.finished_at.astimezone(UTC).date().isoformat()


WARM_ROW = "(warm VMs)"


def warm_key(entry: WarmIdleEntry, group_by: GroupBy) -> str:
    if group_by is GroupBy.CALLER:
        return WARM_ROW
    if group_by is GroupBy.CLASS:
        return entry.gpu_class
    return entry.ended_at.astimezone(UTC).date().isoformat()


def report(
    query: UsageQuery, entries: Iterable[UsageEntry], warm: Iterable[WarmIdleEntry] = ()
) -> UsageReport:
    """The rows (sorted by key) and their total; `warm` only in an admin's report."""
    groups: dict[str, _Sum] = {}
    total = _Sum()
    for entry in entries:
        groups.setdefault(group_key(entry, query.group_by), _Sum()).add(entry)
        total.add(entry)
    for stretch in warm if query.all_callers else ():
        groups.setdefault(warm_key(stretch, query.group_by), _Sum()).add_warm(stretch)
        total.add_warm(stretch)
    return UsageReport(
        start=query.start,
        end=query.end,
        group_by=query.group_by,
        all_callers=query.all_callers,
        rows=[groups[key].row(key) for key in sorted(groups)],
        total=total.row("total"),
    )


def spent_usd(entries: Iterable[UsageEntry]) -> float:
    """What a budget counts: the receipts' cost_usd, summed exactly."""
    return sum(round(e.receipt.cost_usd * _MICRO) for e in entries) / _MICRO


def check_budget(budget_usd: float | None, spent: float, now: datetime) -> None:
    """403 `budget_exceeded` when the caller's month-to-date `spent` reached `budget_usd`."""
    if budget_usd is not None and spent >= budget_usd:
        resets = next_month_start(now)
        raise BudgetExceeded(
            f"this caller spent ${spent:.2f} of its monthly budget of ${budget_usd:.2f} "
            f"this month; new jobs are taken again from {resets.isoformat()}",
            budget_usd=budget_usd,
            spent_usd=spent,
            resets_at=resets,
        )
