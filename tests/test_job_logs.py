"""A job's log: the bound (domain/job_logs.py) and the worker's choice of ComfyUI's log entries
(comfyburst_worker/job_logs.py), against our capture of a real ComfyUI's `/internal/logs/raw`
(tests/test_data/comfyui_logs/). No network."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from comfyburst.domain.job_logs import MAX_LOG_BYTES, MAX_LOG_LINES, bound_log, job_log_object
from comfyburst_worker.job_logs import entry_time, window_text

CAPTURE = Path(__file__).parent / "test_data" / "comfyui_logs" / "internal_logs_raw.json"


def capture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CAPTURE.read_text())
    return data


def naive_utc(stamp: str) -> datetime:
    """A client clock reading of the capture as the capture host's local (UTC) naive time."""
    return datetime.fromisoformat(stamp).astimezone(UTC).replace(tzinfo=None)


def test_the_log_object_sits_beside_the_outputs_not_among_them() -> None:
    name = job_log_object("j-1")
    assert name == "jobs/j-1/logs.txt"
    assert not name.startswith("jobs/j-1/outputs/")


def test_bound_keeps_the_last_whole_lines_within_the_line_cap() -> None:
    text = "".join(f"line {i}\n" for i in range(MAX_LOG_LINES + 50))
    kept = bound_log(text)
    lines = kept.splitlines()
    assert len(lines) == MAX_LOG_LINES
    assert lines[0] == "line 50" and lines[-1] == f"line {MAX_LOG_LINES + 49}"
    assert kept.endswith("\n")


def test_bound_cuts_at_a_line_within_the_byte_cap() -> None:
    line = "é" * 99  # 198 bytes of UTF-8 + newline
    text = f"{line}\n" * 500
    kept = bound_log(text)
    assert len(kept.encode()) <= MAX_LOG_BYTES
    assert len(kept.encode()) > MAX_LOG_BYTES - 200  # as many whole lines as fit
    assert all(part == line for part in kept.splitlines())


def test_bound_keeps_the_end_of_one_overlong_last_line() -> None:
    kept = bound_log("start\n" + "x" * 100 + "END", max_bytes=20)
    assert len(kept.encode()) <= 20
    assert kept.endswith("END\n") and "start" not in kept


def test_bound_of_nothing_is_nothing() -> None:
    assert bound_log("") == ""


def test_entry_times_are_naive_local_and_aware_ones_convert() -> None:
    assert entry_time("2026-12-07T06:56:48.498096") == datetime(2026, 12, 7, 6, 56, 48, 498096)
    # +05:00, a zone no test machine is in: a time left unconverted would differ.
    aware = datetime(2026, 12, 7, 6, 0, tzinfo=timezone(timedelta(hours=5)))
    assert entry_time(aware.isoformat()) == aware.astimezone().replace(tzinfo=None)
    assert entry_time(aware.isoformat()) != aware.replace(tzinfo=None)
    assert entry_time("yesterday") is None and entry_time(12) is None


def test_the_capture_is_naive_local_time_as_the_worker_assumes() -> None:
    """Each run's `got prompt` is stamped just after the client's clock read before the POST."""
    steps = capture()["steps"]
    for run, after in ((steps[1], steps[2]), (steps[3], steps[4])):
        entries = after["response"]["json"]["entries"]
        posted = naive_utc(run["client_utc_before_post"])
        got = [entry_time(e["t"]) for e in entries if e["m"] == "got prompt\n"]
        assert any(t is not None and timedelta(0) <= t - posted < timedelta(seconds=1) for t in got)


def test_the_window_of_the_second_run_holds_its_lines_only() -> None:
    steps = capture()["steps"]
    run = steps[3]
    entries = steps[4]["response"]["json"]["entries"]
    text = window_text(
        entries, naive_utc(run["client_utc_before_post"]), naive_utc(run["client_utc_after_idle"])
    )
    lines = text.splitlines()
    assert lines[0] == "got prompt"
    assert any(line.startswith("!!! Exception during processing !!! ") for line in lines)
    assert "Traceback (most recent call last):" in lines
    assert lines[-1] == "Prompt executed in 0.07 seconds"
    # Nothing of the first run, nothing of the start-up.
    assert "Prompt executed in 0.08 seconds" not in lines
    assert not any("ComfyUI version" in line for line in lines)
    assert text.count("got prompt") == 1


def test_the_window_of_the_first_run_has_no_error_of_the_second() -> None:
    steps = capture()["steps"]
    run = steps[1]
    entries = steps[4]["response"]["json"]["entries"]  # read after both runs
    text = window_text(
        entries, naive_utc(run["client_utc_before_post"]), naive_utc(run["client_utc_after_idle"])
    )
    assert text.splitlines() == ["got prompt", "Prompt executed in 0.08 seconds"]


@pytest.mark.parametrize(
    "entries",
    [None, "text", [1, "x", {"t": "2026-12-07T07:00:00"}, {"m": "no time\n"}, {"t": 5, "m": "x"}]],
)
def test_malformed_entries_are_skipped(entries: Any) -> None:
    since, until = datetime(2026, 1, 1), datetime(2027, 1, 1)
    assert window_text(entries, since, until).strip() == ""


def test_edges_are_included_and_a_carriage_return_redraws_its_line() -> None:
    since, until = datetime(2026, 12, 7, 7, 0), datetime(2026, 12, 7, 7, 1)
    entries = [
        {"t": "2026-12-07T06:59:59.999999", "m": "before\n"},
        {"t": "2026-12-07T07:00:00", "m": "first\n"},
        {"t": "2026-12-07T07:00:10", "m": "\r 50%|#####     | 1/2"},
        {"t": "2026-12-07T07:00:11", "m": "\r100%|##########| 2/2"},
        {"t": "2026-12-07T07:00:11", "m": "\n"},
        {"t": "2026-12-07T07:00:20", "m": "partial "},
        {"t": "2026-12-07T07:00:20", "m": "line\n"},
        {"t": "2026-12-07T07:01:00", "m": "last\n"},
        {"t": "2026-12-07T07:01:00.000001", "m": "after\n"},
    ]
    lines = window_text(entries, since, until).splitlines()
    assert lines == ["first", "100%|##########| 2/2", "partial line", "last"]
