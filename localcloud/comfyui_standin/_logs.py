"""The stand-in's printed output, kept as the real server keeps it and served the same way.

The real server (tests/test_data/comfyui_logs/internal_logs_raw.json) keeps its last 300
writes to stdout/stderr, each `{"t": naive local ISO time, "m": text}`, and answers
`GET /internal/logs/raw` with `{"entries": [...], "size": {"cols", "rows"}}`. It prints
`got prompt` when it accepts a prompt, `!!! Exception during processing !!! <message>` and a
traceback when a node raises, and `Prompt executed in N.NN seconds` after each run; the
stand-in prints those lines at the same points.
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime
from typing import Any

from aiohttp import web

log = logging.getLogger("localcloud.comfyui_standin")

CAPACITY = 300  # the real server's default
TERMINAL_SIZE = {"cols": 80, "rows": 24}  # what it reports without a terminal


class LogBuffer:
    """The last CAPACITY writes, oldest first."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._entries: deque[dict[str, str]] = deque(maxlen=capacity)

    def write(self, text: str) -> None:
        """Record one write (a line ends with its newline) and echo it to the process log."""
        self._entries.append({"t": datetime.now().isoformat(), "m": text})
        log.info("%s", text.rstrip("\n"))

    def line(self, text: str) -> None:
        """One printed line."""
        self.write(text + "\n")

    def entries(self) -> list[dict[str, str]]:
        return [dict(entry) for entry in self._entries]

    def raw(self) -> dict[str, Any]:
        """The `/internal/logs/raw` answer."""
        return {"entries": self.entries(), "size": dict(TERMINAL_SIZE)}


def executed_line(seconds: float) -> str:
    """The line printed after each run (a run over ten minutes shows H:M:S)."""
    if seconds > 600:
        hours, rest = divmod(int(seconds), 3600)
        return f"Prompt executed in {hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"Prompt executed in {seconds:.2f} seconds"


def add_routes(app: web.Application, logs: LogBuffer) -> None:
    """`GET /internal/logs/raw` (the real server has it at the root only, not under /api)."""

    async def raw(request: web.Request) -> web.Response:
        return web.json_response(logs.raw())

    app.router.add_get("/internal/logs/raw", raw)
