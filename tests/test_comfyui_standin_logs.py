"""The stand-in's `GET /internal/logs/raw` against our capture of a real ComfyUI's
(tests/test_data/comfyui_logs/): the same shape, and the same lines printed at the same points
of a run. Loopback only."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import requests

from comfyburst_worker.job_logs import entry_time
from tests._poll import poll_until

DATA = Path(__file__).parent / "test_data"
HTTP_TIMEOUT_S = 10
# The server's own lines of a run (a node may print more of its own before it raises).
_KINDS = (
    ("got prompt\n", "got"),
    ("!!! Exception during processing !!! ", "exception"),
    ("Traceback (most recent call last):\n", "traceback"),
    ("Prompt executed in ", "executed"),
)


def capture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (DATA / "comfyui_logs" / "internal_logs_raw.json").read_text()
    )
    return data


def kinds(entries: list[dict[str, str]]) -> list[str]:
    """Each entry of a known kind, in order (others left out)."""
    found = []
    for entry in entries:
        for prefix, kind in _KINDS:
            if entry["m"].startswith(prefix):
                found.append(kind)
    return found


def new_entries(before: list[dict[str, str]], after: list[dict[str, str]]) -> list[dict[str, str]]:
    return [entry for entry in after if entry not in before]


def raw(base: str, path: str = "/internal/logs/raw") -> requests.Response:
    return requests.get(f"{base}{path}", timeout=HTTP_TIMEOUT_S)


def entries_of(base: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = raw(base).json()["entries"]
    return found


def run(base: str, prefix: str) -> list[dict[str, str]]:
    """POST the capture's prompt with this SaveImage prefix; the entries it printed."""
    before = entries_of(base)
    body = json.loads((DATA / "comfyui_api" / "prompt_success.json").read_text())["request"]["json"]
    save = next(n for n in body["prompt"].values() if n["class_type"] == "SaveImage")
    save["inputs"]["filename_prefix"] = prefix
    answer = requests.post(f"{base}/prompt", json=body, timeout=HTTP_TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    # The line after a run is printed after its history is written: wait for that line.
    printed = poll_until(
        lambda: (
            new
            if kinds(new := new_entries(before, entries_of(base)))[-1:] == ["executed"]
            else None
        ),
        "the run's last line",
        timeout_s=30,
        interval_s=0.05,
    )
    return list(printed)


def test_the_answer_has_the_real_shape(standin: str) -> None:
    real = capture()["steps"][0]["response"]
    ours = raw(standin)
    assert ours.status_code == real["status"] == 200
    assert ours.headers["Content-Type"] == real["headers"]["Content-Type"]
    body = ours.json()
    assert set(body) == set(real["json"]) == {"entries", "size"}
    assert body["size"] == real["json"]["size"]
    # Like the real server, the /api prefix does not reach /internal.
    assert (
        raw(standin, "/api/internal/logs/raw").status_code
        == capture()["steps"][-1]["response"]["status"]
    )


def test_a_successful_run_prints_the_real_lines(standin: str) -> None:
    steps = capture()["steps"]
    real = new_entries(
        steps[0]["response"]["json"]["entries"], steps[2]["response"]["json"]["entries"]
    )
    ours = run(standin, "logs_ok")
    assert kinds(ours) == kinds(real) == ["got", "executed"]
    assert [set(entry) for entry in ours] == [set(entry) for entry in real] == [{"t", "m"}] * 2
    shape = re.compile(r"Prompt executed in \d+\.\d\d seconds\n")
    assert shape.fullmatch(ours[-1]["m"]) and shape.fullmatch(real[-1]["m"])
    # Naive ISO times with microseconds, in the order written.
    for entries in (ours, real):
        times = [entry_time(entry["t"]) for entry in entries]
        assert all(t is not None and t.tzinfo is None for t in times)
        assert times == sorted(times)  # type: ignore[type-var]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", e["t"]) for e in entries)


def test_a_failing_run_prints_the_real_error_lines(standin: str) -> None:
    steps = capture()["steps"]
    real = new_entries(
        steps[2]["response"]["json"]["entries"], steps[4]["response"]["json"]["entries"]
    )
    ours = run(standin, "../../escape_attempt")
    assert kinds(ours) == kinds(real) == ["got", "exception", "traceback", "executed"]
    for entries in (ours, real):
        exception = next(e["m"] for e in entries if e["m"].startswith("!!! Exception"))
        assert "Saving image outside the output folder is not allowed." in exception
        # The traceback is one write, ending with a blank line.
        trace = next(e["m"] for e in entries if e["m"].startswith("Traceback"))
        assert trace.endswith("\n\n") and trace.count("\n") > 3


def test_lines_stay_in_order_across_runs(standin: str) -> None:
    first = run(standin, "logs_a")
    second = run(standin, "logs_b")
    everything = entries_of(standin)
    assert everything[-len(first) - len(second) :] == first + second
