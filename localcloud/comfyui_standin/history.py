"""The stand-in's prompt history, shaped like the real `/history` entries."""

from __future__ import annotations

from typing import Any

from .prompt_queue import QueueItem

MAX_HISTORY_ITEMS = 10_000


class History:
    """Finished prompts by id, oldest first."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}

    def record(
        self,
        item: QueueItem,
        outputs: dict[str, Any],
        meta: dict[str, Any],
        status_str: str,
        messages: list[list[Any]],
    ) -> None:
        """Store a finished prompt (`status_str` is "success" or "error")."""
        self._entries.pop(item.prompt_id, None)
        self._entries[item.prompt_id] = {
            "prompt": item.as_list(),
            "outputs": outputs,
            "status": {
                "status_str": status_str,
                "completed": status_str == "success",
                "messages": messages,
            },
            "meta": meta,
        }
        while len(self._entries) > MAX_HISTORY_ITEMS:
            del self._entries[next(iter(self._entries))]

    def get(self, prompt_id: str) -> dict[str, Any]:
        """`{prompt_id: entry}`, or `{}` when unknown."""
        entry = self._entries.get(prompt_id)
        return {prompt_id: entry} if entry is not None else {}

    def latest(self, max_items: int | None = None) -> dict[str, Any]:
        """All entries, or the newest `max_items`, oldest first."""
        items = list(self._entries.items())
        if max_items is not None:
            items = items[-max_items:] if max_items > 0 else []
        return dict(items)

    def delete(self, prompt_ids: list[str]) -> None:
        """Forget the given prompts (unknown ids are ignored)."""
        for prompt_id in prompt_ids:
            self._entries.pop(prompt_id, None)

    def clear(self) -> None:
        """Forget every prompt."""
        self._entries.clear()
