"""The one error of an environment build, and the bounded tail of what failed."""

from __future__ import annotations

import subprocess

TAIL_LINES = 12
TAIL_CHARS = 1500


class BuildFailed(Exception):
    """The build failed at one pack (or before any); `tail` is the end of what failed."""

    def __init__(self, pack: str | None, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.pack, self.message, self.tail = pack, message, tail

    def text(self) -> str:
        """One bounded text for the environment's `error`."""
        head = f"{self.pack}: {self.message}" if self.pack else self.message
        return f"{head}\n{self.tail}".strip()[: TAIL_CHARS + 300]


def tail_of(done: subprocess.CompletedProcess[str]) -> str:
    """The last lines of a command's output (stderr, then stdout)."""
    return tail((done.stdout or "") + "\n" + (done.stderr or ""))


def tail(text: str) -> str:
    """The last non-blank lines of `text`, bounded."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]
