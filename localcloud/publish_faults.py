"""Local cloud only: make result publishes fail on demand (chaos runs).

The functions wrap their publisher in `FaultyPublisher` when `COMFYBURST_LOCAL_PUBLISH_FAULTS`
names a file; the file holds how many of the next publishes fail (any process may write it).
A failed publish raises, as a Pub/Sub outage would: the done-flag trigger answers 500 and the
event is delivered again, the reaper retries on its next period.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

ENV_VAR = "COMFYBURST_LOCAL_PUBLISH_FAULTS"


class InjectedPublishFailure(RuntimeError):
    """A publish the chaos run made fail."""


def arm(path: Path, count: int) -> None:
    """Make the next `count` publishes (across all processes) fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        current = int(fh.read().strip() or 0)
        fh.seek(0)
        fh.truncate()
        fh.write(str(current + count))


def take(path: Path) -> bool:
    """Consume one armed failure; True when this publish must fail."""
    if not path.exists():
        return False
    with open(path, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        remaining = int(fh.read().strip() or 0)
        if remaining <= 0:
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(str(remaining - 1))
        return True


class FaultyPublisher:
    """A Publisher that fails while failures are armed in its file, else delegates."""

    def __init__(self, inner: Any, path: str | os.PathLike[str]) -> None:
        self._inner = inner
        self._path = Path(path)
        self.failed = 0

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        if take(self._path):
            self.failed += 1
            raise InjectedPublishFailure(f"injected publish failure ({self._path})")
        result: str = self._inner.publish(data, attributes)
        return result
