"""Warm schedules (domain/warm.py): which windows are open when (time zones, the DST day,
overnight windows), the targets per class, what a schedule costs a week, and how a schedule
is declared (refused clearly when wrong) and reaches the VMs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from comfyburst.domain.gpu_classes import GpuClass, GpuClasses
from comfyburst.domain.warm import (
    WarmWindow,
    parse_days,
    parse_schedule,
    warm_target,
    weekly_cost_usd,
    weekly_vm_hours,
)


def _window(
    days: str = "mon-fri", start: str = "09:00", end: str = "18:00", **kw: object
) -> WarmWindow:
    return WarmWindow.model_validate({"days": days, "from": start, "to": end, "vms": 2, **kw})


def _at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_days_accept_ranges_lists_and_names() -> None:
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days("sat,sun") == frozenset({5, 6})
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_days("daily") == frozenset(range(7))
    assert parse_days("Mon-Wed,fri") == frozenset({0, 1, 2, 4})


def test_a_weekday_window_in_utc() -> None:
    window = _window()
    assert window.open_at(_at(2026, 12, 7, 9, 0))  # Monday 09:00
    assert window.open_at(_at(2026, 12, 7, 17, 59))
    assert not window.open_at(_at(2026, 12, 7, 18, 0))  # `to` is exclusive
    assert not window.open_at(_at(2026, 12, 7, 8, 59))
    assert not window.open_at(_at(2026, 12, 12, 10, 0))  # Saturday


def test_the_window_is_wall_clock_time_in_its_zone() -> None:
    window = _window(time_zone="America/New_York")
    # Monday 09:00 in New York (EST, UTC-5) is 14:00 UTC.
    assert not window.open_at(_at(2026, 12, 7, 13, 59))
    assert window.open_at(_at(2026, 12, 7, 14, 0))
    # Friday 17:30 in New York is Friday 22:30 UTC: still open.
    assert window.open_at(_at(2026, 12, 11, 22, 30))
    # Saturday 01:00 UTC is Friday 20:00 in New York: closed.
    assert not window.open_at(_at(2026, 12, 12, 1, 0))


def test_on_the_dst_day_the_window_opens_at_local_nine() -> None:
    window = _window(days="daily", time_zone="Europe/Berlin")
    # 28 March 2026 (CET, UTC+1): 09:00 local is 08:00 UTC.
    assert not window.open_at(_at(2026, 3, 28, 7, 30))
    assert window.open_at(_at(2026, 3, 28, 8, 0))
    # 29 March 2026, clocks go forward at 01:00 UTC (CEST, UTC+2): 09:00 local is 07:00 UTC.
    assert window.open_at(_at(2026, 3, 29, 7, 0))
    assert not window.open_at(_at(2026, 3, 29, 6, 59))
    # ... and it closes at 18:00 local, 16:00 UTC.
    assert window.open_at(_at(2026, 3, 29, 15, 59))
    assert not window.open_at(_at(2026, 3, 29, 16, 0))


def test_an_overnight_window_belongs_to_the_day_it_opens() -> None:
    window = _window(days="fri", start="22:00", end="06:00")
    assert window.open_at(_at(2026, 12, 11, 22, 0))  # Friday night
    assert window.open_at(_at(2026, 12, 12, 5, 59))  # Saturday morning: Friday's window
    assert not window.open_at(_at(2026, 12, 12, 6, 0))
    assert not window.open_at(_at(2026, 12, 12, 22, 30))  # Saturday night: no window
    assert not window.open_at(_at(2026, 12, 11, 5, 0))  # Friday morning: Thursday's, none


def test_targets_take_the_largest_open_window_per_class() -> None:
    day = _window()
    evening = WarmWindow.model_validate(
        {"days": "mon-fri", "from": "17:00", "to": "20:00", "vms": 5}
    )
    classes = [
        GpuClass(name="l4", warm=[day, evening]),
        GpuClass(name="h100", warm=[]),
        GpuClass(name="t4", warm=[_window(days="sat,sun")]),
    ]
    assert warm_target(classes, _at(2026, 12, 7, 10, 0)) == {"l4": 2}
    assert warm_target(classes, _at(2026, 12, 7, 17, 30)) == {"l4": 5}
    assert warm_target(classes, _at(2026, 12, 7, 21, 0)) == {}
    assert warm_target(classes, _at(2026, 12, 13, 10, 0)) == {"t4": 2}


def test_the_weekly_hours_and_cost_of_a_schedule() -> None:
    assert weekly_vm_hours([_window()]) == 5 * 9 * 2
    assert weekly_cost_usd([_window()], 0.71) == round(90 * 0.71, 2)
    overnight = _window(days="daily", start="22:00", end="06:00")
    assert weekly_vm_hours([overnight]) == 7 * 8 * 2
    # Overlaps count once: 09-18 x2 and 17-20 x5 -> 8 h x2 + 3 h x5 a weekday.
    evening = WarmWindow.model_validate(
        {"days": "mon-fri", "from": "17:00", "to": "20:00", "vms": 5}
    )
    assert weekly_vm_hours([_window(), evening]) == 5 * (8 * 2 + 3 * 5)
    assert weekly_cost_usd([], 3.0) == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"days": "weekdayz"}, "days 'weekdayz'"),
        ({"from": "9am"}, "from '9am'"),
        ({"to": "25:00"}, "to '25:00'"),
        ({"time_zone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"to": "09:00"}, "from and to are the same"),
        ({"vms": 0}, "vms"),
        ({"size": 3}, "size"),
    ],
)
def test_a_wrong_window_is_refused_naming_what(change: dict[str, object], message: str) -> None:
    raw = {"days": "mon-fri", "from": "09:00", "to": "18:00", "vms": 1, **change}
    with pytest.raises(ValidationError, match=message):
        WarmWindow.model_validate(raw)


def test_the_schedule_reaches_the_vms_and_the_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    from comfyburst.settings import FunctionSettings

    warm = [
        {"days": "mon-fri", "from": "08:00", "to": "19:00", "time_zone": "Europe/Paris", "vms": 1}
    ]
    classes = [
        {
            "name": "l4",
            "zones": ["europe-west4-a"],
            "templates": {"europe-west4": "projects/p/global/instanceTemplates/l4"},
            "price_per_hour": 0.5,
            "warm": warm,
        },
        {
            "name": "t4",
            "zones": ["europe-west4-a"],
            "templates": {"europe-west4": "projects/p/global/instanceTemplates/t4"},
        },
    ]
    monkeypatch.setenv("COMFYBURST_GPU_CLASSES", json.dumps(classes))
    settings = FunctionSettings(
        project_id="p", jobs_bucket="j", outputs_bucket="o", signals_bucket="s", results_topic="t"
    )
    config = settings.deployment_config()
    assert list(config.warm_schedule) == ["l4"]
    schedule = parse_schedule(config.warm_schedule)
    assert schedule["l4"][0].time_zone == "Europe/Paris"
    listed = {c.name: c for c in settings.gpu_class_set().listing().gpu_classes}
    assert listed["l4"].warm == warm
    assert listed["l4"].warm_cost_per_week == round(5 * 11 * 0.5, 2)
    assert listed["t4"].warm == [] and listed["t4"].warm_cost_per_week == 0.0


def test_gpu_classes_shows_the_schedule_and_its_weekly_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from comfyburst_cli import main

    l4 = GpuClass(name="l4", price_per_hour=0.71, warm=[_window(time_zone="Europe/Berlin")])
    answer = GpuClasses((l4, GpuClass(name="t4")), "l4").listing().model_dump(mode="json")

    class _Api:
        def gpu_classes(self) -> dict[str, object]:
            return answer

    monkeypatch.setattr(main, "_client", _Api)
    result = CliRunner().invoke(main.app, ["gpu-classes"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if "l4" in row)
    assert "mon-fri 09:00-18:00 Europe/Berlin x2: $63.90/week" in line
    assert main.warm_line(answer["gpu_classes"][1]) == "-"


def test_a_window_beyond_the_class_s_max_vms_is_refused() -> None:
    with pytest.raises(ValidationError, match="keeps 2 VMs up, beyond its max_vms 1"):
        GpuClass(name="l4", max_vms=1, warm=[_window()])
