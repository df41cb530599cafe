"""Throttled progress: the latest value wins, written at most once per interval, off-thread.
Generic over the value, so live previews (previews.py) are throttled by the same rule."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProgressThrottle(Generic[T]):
    """Decides what to write when; pure apart from the clock it is given."""

    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last_write: float | None = None
        self._pending: T | None = None
        self._last_written: T | None = None

    def offer(self, progress: T) -> None:
        """Record the newest value (an unchanged one is not written again)."""
        self._pending = None if progress == self._last_written else progress

    def due(self) -> T | None:
        """The pending value, if the interval since the last write has passed."""
        if self._pending is None:
            return None
        now = self._clock()
        if self._last_write is not None and now - self._last_write < self.min_interval_s:
            return None
        return self._take(now)

    def flush(self) -> T | None:
        """The pending value regardless of the interval (the run ended)."""
        return self._take(self._clock()) if self._pending is not None else None

    def wait_s(self) -> float | None:
        """Seconds until the pending value is due; None when nothing is pending."""
        if self._pending is None:
            return None
        if self._last_write is None:
            return 0.0
        return max(0.0, self.min_interval_s - (self._clock() - self._last_write))

    def _take(self, now: float) -> T:
        value, self._pending = self._pending, None
        assert value is not None
        self._last_write, self._last_written = now, value
        return value


class ProgressWriter(Generic[T]):
    """A thread that writes what the throttle lets through; `submit` never blocks on I/O."""

    def __init__(
        self, write: Callable[[T], None], min_interval_s: float, name: str = "progress"
    ) -> None:
        self._write = write
        self._throttle: ProgressThrottle[T] = ProgressThrottle(min_interval_s)
        self._cond = threading.Condition()
        self._closed = False
        self._last: T | None = None  # what close() leaves for the thread's last write
        self._handed = False  # closed with `wait` false: the thread makes the last write
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, progress: T) -> None:
        with self._cond:
            self._throttle.offer(progress)
            self._cond.notify()

    def close(self, final: T | None = None, flush: bool = True, *, wait: bool = True) -> None:
        """Stop the thread; write `final` (or the pending value) once more, synchronously,
        unless `flush` is false (the pending value is then dropped). With `wait` false that
        last write is the thread's, after any write in flight, and `join()` waits for it."""
        with self._cond:
            self._closed = True
            if final is not None:
                self._throttle.offer(final)
            last = self._throttle.flush() if flush else None
            self._last = None if wait else last
            self._handed = not wait
            self._cond.notify()
        if not wait:
            return
        self._thread.join(timeout=5)
        if last is not None:
            self._safe_write(last)

    def join(self) -> None:
        """Wait until a writer closed with `wait` false made its last write (each write is
        bounded by the store client's own timeout); else return at once."""
        if self._handed:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    wait = self._throttle.wait_s()
                    if wait == 0.0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    last = self._last
                    break
                value = self._throttle.due()
            if value is not None:
                self._safe_write(value)
        if last is not None:
            self._safe_write(last)

    def _safe_write(self, value: T) -> None:
        try:
            self._write(value)
        except Exception as exc:
            # Progress and previews are advisory; a failed write must not fail the job.
            log.warning("%s write failed: %s", self._thread.name, exc)
