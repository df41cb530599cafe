"""How long a draining agent waits before it looks at the queue again.

With a live listen on its class's queue (adapters/firestore_queue_watch.py) that last said the
queue is empty, it waits for the listen's next change, looking anyway every
`drain_listen_poll_interval_s` (a safety net). Without one (none given, not yet answered, or
broken), or while the queue holds jobs it could not take, it polls every
`drain_poll_interval_s` as before listeners.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

# How often a wait on the listen checks that the listen still streams: a listen that breaks
# mid-wait is noticed within this, not at the end of the safety interval.
_LIVE_CHECK_S = 0.5


class QueueSignal(Protocol):
    """A listen on this VM's class's queue (FirestoreQueueWatch)."""

    changed: threading.Event
    queued: int | None

    @property
    def live(self) -> bool: ...

    def stop(self) -> None: ...


class DrainWait:
    def __init__(
        self, signal: QueueSignal | None, poll_interval_s: float, listen_poll_interval_s: float
    ) -> None:
        self.signal = signal
        self.poll_interval_s = poll_interval_s
        self.listen_poll_interval_s = listen_poll_interval_s

    def arm(self) -> None:
        """Before a look at the queue: a change from now on wakes the next wait."""
        if self.signal is not None:
            self.signal.changed.clear()

    def listening(self) -> bool:
        """Whether a live listen says the queue is empty (else: poll)."""
        signal = self.signal
        return signal is not None and signal.queued == 0 and signal.live

    def wait(self, remaining_s: float) -> bool:
        """Wait until the next look; False: the drain grace (`remaining_s`) ends first."""
        signal = self.signal
        if signal is not None and signal.changed.is_set() and signal.live:
            return remaining_s > 0  # the queue changed since the last look began: look again
        if signal is None or not self.listening():
            if self.poll_interval_s > remaining_s:
                return False
            time.sleep(self.poll_interval_s)
            return True
        end = time.monotonic() + min(self.listen_poll_interval_s, remaining_s)
        while (left := end - time.monotonic()) > 0:
            if signal.changed.wait(min(_LIVE_CHECK_S, left)):
                return True
            if not signal.live:
                return True  # look now; polling from here on
        return remaining_s > self.listen_poll_interval_s  # the safety look, within the grace
