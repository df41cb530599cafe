"""Admitting a submit under the caller's limits (domain/caller_limits.py): class, then queue.

The queue limit counts the caller's `queued` jobs with one aggregation query, which is not
atomic with the job's create: two submits may both count before either commits. Within one
API instance that race is closed: each submit being admitted holds a slot of its caller in
this process until its job is committed (or refused), and a submit counts the other slots
held here as queued. Across instances it is not: at worst each other instance admits the
submits of this caller it has in flight at that moment (at most `api_concurrency` each), so
the over-admission is bounded by `(api_max_instances - 1) * api_concurrency` and in practice
by how many submits one caller sends at the same instant. A slot held by a submit whose job
is committed already is counted twice for that moment: near the limit a submit may be
refused (429, retry) a little early, never admitted late.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from comfyburst.domain.caller_limits import Limits, check_queue


class Admission:
    """This process's submits being admitted, per caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str | None, int] = {}

    @contextmanager
    def queue_slot(
        self, caller: str | None, limits: Limits, count_queued: Callable[[], int]
    ) -> Iterator[None]:
        """Hold a slot of the caller while the body creates its job; QueueFull (nothing held)
        when the caller's queued jobs and the other held slots reach `max_queued`."""
        if limits.max_queued is None:
            yield
            return
        with self._lock:
            others = self._pending.get(caller, 0)
            self._pending[caller] = others + 1
        try:
            check_queue(limits, count_queued() + others)
            yield
        finally:
            with self._lock:
                left = self._pending[caller] - 1
                if left:
                    self._pending[caller] = left
                else:
                    del self._pending[caller]

    def held(self, caller: str | None) -> int:
        """Slots of the caller held now (tests look)."""
        with self._lock:
            return self._pending.get(caller, 0)


# One per process: every submit of this process goes through it.
ADMISSION = Admission()
