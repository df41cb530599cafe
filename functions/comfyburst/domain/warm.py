"""Warm schedules: per GPU class, windows of the week in which VMs are kept running and idle
so the first job in working hours skips the boot. Pure rules over `now`; no I/O.

A window is `{days, from, to, time_zone, vms}`: on `days` (`mon-fri`, `sat,sun`, `daily`),
from `from` to `to` (`HH:MM`, wall-clock time in `time_zone`, an IANA name), keep `vms` VMs
up. Wall-clock time makes a window follow daylight saving time: `09:00-18:00` in
Europe/Berlin opens at 09:00 local on the day the clocks change too (that day it is an hour
shorter or longer in real time). A window whose `to` is not after its `from` runs overnight
into the next day and belongs to the day it opens on (`fri 22:00-06:00` ends Saturday 06:00).
Overlapping windows of one class do not add up: the largest count applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {"daily": "mon-sun", "weekdays": "mon-fri", "weekends": "sat-sun"}
# The reference week the weekly hours are counted over: a week with no DST change in most zones
# (the cost shown is a typical week's; a DST week is an hour longer or shorter).
_REFERENCE_MONDAY = datetime(2026, 1, 5, tzinfo=UTC)


@lru_cache(maxsize=256)
def parse_days(text: str) -> frozenset[int]:
    """`mon-fri`, `sat,sun`, `mon-wed,fri`, `daily` -> weekday numbers (Monday 0); ValueError."""
    spec = _DAY_ALIASES.get(text.strip().lower(), text.strip().lower())
    days: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        first, sep, last = part.partition("-")
        if first not in DAY_NAMES or (sep and last not in DAY_NAMES):
            raise ValueError(
                f"days {text!r}: use day names {', '.join(DAY_NAMES)}, ranges such as "
                "mon-fri, lists such as sat,sun, or daily"
            )
        start, end = DAY_NAMES.index(first), DAY_NAMES.index(last if sep else first)
        days.update(d % 7 for d in range(start, start + (end - start) % 7 + 1))
    return frozenset(days)


@lru_cache(maxsize=256)
def _clock(text: str, field: str) -> time:
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"{field} {text!r}: use HH:MM (24-hour)")
    if (int(hours), int(minutes)) == (24, 0):
        return time.max
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(f"{field} {text!r}: use HH:MM (24-hour), 00:00 to 24:00")
    return time(int(hours), int(minutes))


class WarmWindow(BaseModel):
    """One window of a class's warm schedule (the `warm` entries of a GPU class)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    days: str = Field(description="mon-fri, sat,sun, daily, ...")
    from_: str = Field(alias="from", description="HH:MM local time the window opens")
    to: str = Field(description="HH:MM local time it closes (not after `from`: next day)")
    time_zone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Berlin")
    vms: int = Field(ge=1, le=100, description="VMs kept running and idle inside the window")

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value

    @field_validator("from_", "to")
    @classmethod
    def _times(cls, value: str, info: Any) -> str:
        _clock(value, "from" if info.field_name == "from_" else "to")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"time_zone {value!r}: not an IANA time zone name") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> WarmWindow:
        if _clock(self.from_, "from") == _clock(self.to, "to"):
            raise ValueError(f"warm window {self.from_}-{self.to}: from and to are the same")
        return self

    def open_at(self, now: datetime) -> bool:
        """Whether the window is open at `now` (aware)."""
        local = now.astimezone(_zone(self.time_zone))
        days = parse_days(self.days)
        opens, closes = _clock(self.from_, "from"), _clock(self.to, "to")
        wall = local.time().replace(tzinfo=None)
        if opens < closes:
            return local.weekday() in days and opens <= wall < closes
        # Overnight: the evening part today, or the morning part of yesterday's window.
        yesterday = (local.weekday() - 1) % 7
        return (local.weekday() in days and wall >= opens) or (yesterday in days and wall < closes)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


class _Classed(Protocol):
    """A GPU class as these rules see it (domain/gpu_classes.GpuClass)."""

    @property
    def name(self) -> str: ...

    @property
    def warm(self) -> list[WarmWindow]: ...


def class_target(windows: Iterable[WarmWindow], now: datetime) -> int:
    """The VMs one class keeps warm at `now`: the largest count of its open windows, else 0."""
    return max((w.vms for w in windows if w.open_at(now)), default=0)


def stays_warm(schedule: Mapping[str, Sequence[WarmWindow]], gpu_class: str, now: datetime) -> bool:
    """Whether an idle VM of `gpu_class` stays up at `now` (a window of its class is open)."""
    return class_target(schedule.get(gpu_class, ()), now) > 0


def warm_target(classes: Iterable[_Classed], now: datetime) -> dict[str, int]:
    """{class name: VMs to keep warm at `now`} for the classes with an open window."""
    targets = {c.name: class_target(c.warm, now) for c in classes}
    return {name: count for name, count in targets.items() if count > 0}


def weekly_vm_hours(windows: Sequence[WarmWindow]) -> float:
    """VM hours a schedule keeps warm in a week (overlaps counted once, at the larger count).

    Counted minute by minute over a reference week, so overnight windows, overlaps and
    different time zones need no special cases.
    """
    return _weekly_vm_minutes(tuple(windows)) / 60.0 if windows else 0.0


@lru_cache(maxsize=64)
def _weekly_vm_minutes(windows: tuple[WarmWindow, ...]) -> int:
    """Cached: `GET /gpu-classes` asks on every call, and a schedule changes only on deploy."""
    week = range(7 * 24 * 60)
    return sum(class_target(windows, _REFERENCE_MONDAY + timedelta(minutes=m)) for m in week)


def weekly_cost_usd(windows: Sequence[WarmWindow], price_per_hour: float) -> float:
    """What a schedule's idle VMs cost per week at `price_per_hour` (USD, cents rounded)."""
    return round(weekly_vm_hours(windows) * price_per_hour, 2)


def parse_schedule(raw: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[WarmWindow]]:
    """`DeploymentConfig.warm_schedule` (class -> JSON windows) as windows."""
    return {name: [WarmWindow.model_validate(w) for w in ws] for name, ws in raw.items()}


def dump_windows(windows: Iterable[WarmWindow]) -> list[dict[str, Any]]:
    """Windows as the JSON the deployment config and `GET /gpu-classes` carry."""
    return [w.model_dump(by_alias=True) for w in windows]
