"""What one prompt's websocket messages (or its history entry) say about its run. Pure."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from comfyburst.schema import Progress


class Outcome(str, Enum):
    SUCCESS = "success"  # execution_success
    ERROR = "error"  # execution_error
    INTERRUPTED = "interrupted"  # execution_interrupted (our cancel, our deadline, or anyone's)


@dataclass
class RunTracker:
    """Feed it every websocket message; it keeps only what concerns `prompt_id`."""

    prompt_id: str
    node_count: int
    started: bool = False
    cached: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    current: str | None = None
    value: int = 0
    max: int = 0
    outcome: Outcome | None = None
    failure: dict[str, Any] | None = None
    done: bool = False  # `executing` with node null: history is written, outputs can be read
    start_ms: int | None = None
    end_ms: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    # When the first message naming a node of this prompt came (executing or progress): the
    # run's first step, in `clock` seconds (wall time by default).
    first_step_s: float | None = None
    clock: Callable[[], float] = time.time

    def feed(self, message: dict[str, Any]) -> bool:
        """Apply one message; True when the progress it implies changed."""
        kind, data = message.get("type"), message.get("data")
        if not isinstance(data, dict) or data.get("prompt_id") != self.prompt_id:
            return False
        handler = _HANDLERS.get(str(kind))
        return handler(self, data) if handler else False

    def progress(self) -> Progress:
        """Node, its sampler step, and the whole run's fraction (nodes run + sampler share)."""
        if self.outcome is Outcome.SUCCESS:
            return Progress(node=self.current, value=self.value, max=self.max, fraction=1.0)
        to_run = max(1, self.node_count - len(self.cached))
        ran = len(self.finished - self.cached)
        step = self.value / self.max if self.max and self.current not in self.finished else 0.0
        fraction = min(0.99, max(0.0, (ran + step) / to_run))
        return Progress(node=self.current, value=self.value, max=self.max, fraction=fraction)

    def apply_history(self, entry: dict[str, Any]) -> bool:
        """Settle the run from its history entry (after a dropped websocket); True if over."""
        status = entry.get("status") or {}
        for event, data in status.get("messages") or []:
            if isinstance(data, dict):
                self.feed({"type": event, "data": {**data, "prompt_id": self.prompt_id}})
        outputs = entry.get("outputs")
        if isinstance(outputs, dict):
            self.outputs.update(outputs)
        if self.outcome is None and status.get("status_str") == "success":
            self.outcome = Outcome.SUCCESS
        if self.outcome is None and status.get("status_str") == "error":
            self.outcome = Outcome.ERROR
        if self.outcome is not None:
            self.done = True
        return self.done

    # --- handlers, one per message type -------------------------------------------------

    def _start(self, data: dict[str, Any]) -> bool:
        self.started = True
        self.start_ms = _int(data.get("timestamp")) or self.start_ms
        return False

    def _cached(self, data: dict[str, Any]) -> bool:
        self.cached.update(str(n) for n in data.get("nodes") or [])
        return bool(data.get("nodes"))

    def _executing(self, data: dict[str, Any]) -> bool:
        node = data.get("node")
        if node is None:
            self.done = True
            if self.current is not None and self.outcome is Outcome.SUCCESS:
                self.finished.add(self.current)
            return False
        node = str(node)
        self._stepped()
        if self.current is not None and self.current != node:
            self.finished.add(self.current)
        self.current, self.value, self.max = node, 0, 0
        return True

    def _progress(self, data: dict[str, Any]) -> bool:
        self._stepped()
        self.value, self.max = _int(data.get("value")) or 0, _int(data.get("max")) or 0
        if data.get("node") is not None:
            self.current = str(data["node"])
        return True

    def _stepped(self) -> None:
        if self.first_step_s is None:
            self.first_step_s = self.clock()

    def _progress_state(self, data: dict[str, Any]) -> bool:
        nodes = data.get("nodes")
        before = len(self.finished)
        if isinstance(nodes, dict):
            for key, value in nodes.items():
                if isinstance(value, dict) and value.get("state") == "finished":
                    self.finished.add(str(key))
        return len(self.finished) != before

    def _executed(self, data: dict[str, Any]) -> bool:
        node = str(data.get("node"))
        self.finished.add(node)
        if isinstance(data.get("output"), dict):
            self.outputs[node] = data["output"]
        return True

    def _success(self, data: dict[str, Any]) -> bool:
        self.outcome = Outcome.SUCCESS
        self.end_ms = _int(data.get("timestamp")) or self.end_ms
        return True

    def _error(self, data: dict[str, Any]) -> bool:
        self.outcome, self.failure = Outcome.ERROR, data
        self.end_ms = _int(data.get("timestamp")) or self.end_ms
        return False

    def _interrupted(self, data: dict[str, Any]) -> bool:
        if self.outcome is None:
            self.outcome, self.failure = Outcome.INTERRUPTED, data
        self.end_ms = _int(data.get("timestamp")) or self.end_ms
        return False


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_HANDLERS = {
    "execution_start": RunTracker._start,
    "execution_cached": RunTracker._cached,
    "executing": RunTracker._executing,
    "progress": RunTracker._progress,
    "progress_state": RunTracker._progress_state,
    "executed": RunTracker._executed,
    "execution_success": RunTracker._success,
    "execution_error": RunTracker._error,
    "execution_interrupted": RunTracker._interrupted,
}
