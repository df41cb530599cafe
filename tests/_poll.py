"""The tests' one poll-until helper: wait for something that happens in another process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    check: Callable[[], T], what: str, *, timeout_s: float = 20.0, interval_s: float = 0.05
) -> T:
    """Call `check` until it returns something truthy and return that; after `timeout_s`
    fail with AssertionError naming `what`. `check` runs at least once, and once more at the
    deadline, so a slow machine that oversleeps the last interval still sees the last state."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
