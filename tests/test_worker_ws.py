"""The websocket follower and run tracker, replaying messages captured from a real ComfyUI;
and the progress throttle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import websocket

from comfyburst.schema import Progress
from comfyburst_worker.progress import ProgressThrottle
from comfyburst_worker.run_tracker import Outcome, RunTracker
from comfyburst_worker.ws_follower import WsFollower

DATA = Path(__file__).parent / "test_data" / "comfyui_api"


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


class _Socket:
    """Plays back frames; an Exception in the list is raised at that point."""

    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames

    def recv(self) -> Any:
        if not self.frames:
            raise websocket.WebSocketTimeoutException("idle")
        frame = self.frames.pop(0)
        if isinstance(frame, Exception):
            raise frame
        return frame

    def close(self) -> None:
        pass


class _Comfy:
    def __init__(self, history: dict[str, Any] | None = None) -> None:
        self._history = history
        self.history_calls = 0

    def ws_url(self, client_id: str) -> str:
        return f"ws://127.0.0.1:1/ws?clientId={client_id}"

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        self.history_calls += 1
        return self._history


def _frames(run: dict[str, Any]) -> list[str]:
    return [json.dumps(m["json"]) for m in run["messages"] if "json" in m]


def _follower(sockets: list[_Socket], comfy: _Comfy) -> WsFollower:
    return WsFollower(comfy, "c1", connect=lambda _url: sockets.pop(0))  # type: ignore[arg-type]


def test_success_run_replayed_ends_done_with_outputs_and_rising_progress():
    run = _load("ws_success_run.json")
    tracker = RunTracker(prompt_id=run["prompt_id"], node_count=3)
    seen: list[Progress] = []
    _follower([_Socket(_frames(run))], _Comfy()).follow(tracker, seen.append, lambda: False)
    assert tracker.outcome is Outcome.SUCCESS and tracker.done
    assert tracker.outputs["3"]["images"][0]["filename"] == "ok_00001_.png"
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert tracker.end_ms is not None and tracker.start_ms is not None


def test_error_run_replayed_keeps_node_and_message():
    run = _load("ws_error_run.json")
    tracker = RunTracker(prompt_id=run["prompt_id"], node_count=3)
    _follower([_Socket(_frames(run))], _Comfy()).follow(tracker, lambda _p: None, lambda: False)
    assert tracker.outcome is Outcome.ERROR and tracker.done
    assert tracker.failure is not None
    assert tracker.failure["node_id"] == "3" and tracker.failure["node_type"] == "SaveImage"


def test_other_prompts_messages_are_ignored():
    run = _load("ws_success_run.json")
    tracker = RunTracker(prompt_id="someone-else", node_count=3)
    for frame in _frames(run):
        tracker.feed(json.loads(frame))
    assert tracker.outcome is None and not tracker.done


def test_dropped_socket_reconnects_and_settles_from_history():
    run = _load("ws_success_run.json")
    history = _load("history_success.json")["response"]["json"][run["prompt_id"]]
    frames = _frames(run)
    # The socket dies before execution_success; the run ends while nobody listens.
    cut = next(i for i, f in enumerate(frames) if "execution_success" in f)
    first = _Socket([*frames[:cut], websocket.WebSocketConnectionClosedException("gone")])
    comfy = _Comfy(history)
    tracker = RunTracker(prompt_id=run["prompt_id"], node_count=3)
    _follower([first, _Socket([])], comfy).follow(tracker, lambda _p: None, lambda: False)
    assert tracker.done and tracker.outcome is Outcome.SUCCESS
    assert comfy.history_calls >= 1
    assert tracker.outputs["3"]["images"][0]["filename"] == "ok_00001_.png"


def test_sampler_steps_blend_into_the_fraction():
    tracker = RunTracker(prompt_id="p", node_count=4)
    tracker.feed({"type": "execution_cached", "data": {"prompt_id": "p", "nodes": ["1", "2"]}})
    tracker.feed({"type": "executing", "data": {"prompt_id": "p", "node": "3"}})
    tracker.feed(
        {"type": "progress", "data": {"prompt_id": "p", "node": "3", "value": 5, "max": 10}}
    )
    assert tracker.progress().fraction == pytest.approx(0.25)  # half of node 3, of 2 to run
    tracker.feed({"type": "executing", "data": {"prompt_id": "p", "node": "4"}})
    assert tracker.progress().fraction == pytest.approx(0.5)


def test_interrupted_run_from_transcript():
    run = _load("ws_interrupt_run.json")
    prompt_id = run["ids"]["A"]
    tracker = RunTracker(prompt_id=prompt_id, node_count=4)
    for frame in _frames(run):
        tracker.feed(json.loads(frame))
    assert tracker.outcome is Outcome.INTERRUPTED and tracker.done
    assert tracker.failure is not None and tracker.failure["node_type"] == "ImageBlur"


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_throttle_writes_first_at_once_then_latest_per_interval():
    clock = _Clock()
    throttle = ProgressThrottle(1.0, clock)
    throttle.offer(Progress(fraction=0.1))
    assert throttle.due() == Progress(fraction=0.1)
    throttle.offer(Progress(fraction=0.2))
    throttle.offer(Progress(fraction=0.3))
    assert throttle.due() is None
    assert throttle.wait_s() == pytest.approx(1.0)
    clock.t += 1.0
    assert throttle.due() == Progress(fraction=0.3)  # the latest wins, 0.2 is never written
    assert throttle.due() is None


def test_throttle_skips_unchanged_values_and_flushes_the_last():
    clock = _Clock()
    throttle = ProgressThrottle(1.0, clock)
    throttle.offer(Progress(fraction=0.5))
    assert throttle.due() is not None
    clock.t += 5
    throttle.offer(Progress(fraction=0.5))
    assert throttle.due() is None
    throttle.offer(Progress(fraction=1.0))
    assert throttle.flush() == Progress(fraction=1.0)
    assert throttle.flush() is None
