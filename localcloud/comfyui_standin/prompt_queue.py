"""The stand-in's prompt queue: a heap by number (front = negative), one running prompt."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class QueueItem:
    """One accepted prompt, as `/queue` and history show it."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]

    @property
    def client_id(self) -> str | None:
        """The websocket client that gets this prompt's execution messages, if any."""
        return self.extra_data.get("client_id")

    def as_list(self) -> list[Any]:
        """`[number, prompt_id, prompt, extra_data, outputs_to_execute]`."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


class PromptQueue:
    """Pending prompts in number order; `on_change` is called whenever queue_remaining moves."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._heap: list[tuple[float, int, QueueItem]] = []
        self._seq = itertools.count()
        self._numbers = itertools.count()
        self._running: QueueItem | None = None
        self._wakeup = asyncio.Event()
        self._on_change = on_change

    def next_number(self, front: bool) -> int:
        """The number a new prompt gets: the counter, negated for `front`."""
        number = next(self._numbers)
        return -number if front else number

    @property
    def running(self) -> QueueItem | None:
        """The prompt being executed, if any."""
        return self._running

    def remaining(self) -> int:
        """Pending plus running, what `status.exec_info.queue_remaining` reports."""
        return len(self._heap) + (1 if self._running else 0)

    def put(self, item: QueueItem) -> None:
        """Enqueue an accepted prompt."""
        heapq.heappush(self._heap, (item.number, next(self._seq), item))
        self._wakeup.set()
        self._on_change()

    async def get(self) -> QueueItem:
        """Wait for the lowest-numbered pending prompt and mark it running."""
        while not self._heap:
            self._wakeup.clear()
            await self._wakeup.wait()
        _, _, item = heapq.heappop(self._heap)
        self._running = item
        self._on_change()
        return item

    def task_done(self) -> None:
        """The running prompt finished (history is already written)."""
        self._running = None
        self._on_change()

    def snapshot(self) -> dict[str, list[list[Any]]]:
        """The `GET /queue` body; pending in heap order, as the real server shows it."""
        running = [self._running.as_list()] if self._running else []
        return {"queue_running": running, "queue_pending": [e[2].as_list() for e in self._heap]}

    def delete(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts by id (unknown ids are ignored)."""
        wanted = set(prompt_ids)
        kept = [entry for entry in self._heap if entry[2].prompt_id not in wanted]
        if len(kept) != len(self._heap):
            self._heap = kept
            heapq.heapify(self._heap)
            self._on_change()

    def clear(self) -> None:
        """Remove every pending prompt (the running one is untouched)."""
        if self._heap:
            self._heap = []
            self._on_change()
