"""The job watch: heartbeats, lease renewal and the cancel watch, on one background thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from comfyburst.ports import Clock, JobStore
from comfyburst.schema import Job
from comfyburst.states import JobState
from comfyburst_worker.claims import LeaseKeeper

log = logging.getLogger(__name__)


class JobWatch:
    """Polls the job every `poll_interval_s`; writes `heartbeat_at` and renews the lease every
    `heartbeat_interval_s`. Calls `on_stop` once when the job is cancelled or no longer ours."""

    def __init__(
        self,
        store: JobStore,
        leases: LeaseKeeper,
        clock: Clock,
        job: Job,
        heartbeat_interval_s: float,
        poll_interval_s: float,
        on_stop: Callable[[], None],
    ) -> None:
        self.store, self.leases, self.clock = store, leases, clock
        self.job_id, self.attempt = job.job_id, job.attempt
        self.heartbeat_interval_s, self.poll_interval_s = heartbeat_interval_s, poll_interval_s
        self._on_stop = on_stop
        self.cancelled = threading.Event()
        self.lost = threading.Event()  # terminal, requeued or moved elsewhere by someone else
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{job.job_id}", daemon=True)

    def start(self) -> JobWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=10)

    @property
    def stopping(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set()

    def _run(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_interval_s
        while not self._halt.wait(self.poll_interval_s):
            try:
                self._check()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_interval_s
                    self._beat()
            except Exception as exc:
                # A store hiccup must not end the job; the next round tries again.
                log.warning("job watch of %s: %s", self.job_id, exc)

    def _check(self) -> None:
        if self.stopping:
            return
        job = self.store.get_job(self.job_id)
        if job is None:
            return
        mine = (
            job.state is JobState.RUNNING
            and job.attempt == self.attempt
            and job.vm is not None
            and job.vm.name == self.leases.vm.name
        )
        if job.cancel_requested or job.state is JobState.CANCELLED:
            log.info("job %s: cancel requested", self.job_id)
            self.cancelled.set()
            self._on_stop()
        elif not mine:
            log.warning("job %s is %s elsewhere or finished; abandoning it", self.job_id, job.state)
            self.lost.set()
            self._on_stop()

    def _beat(self) -> None:
        self.store.patch_job(self.job_id, {"heartbeat_at": self.clock.now()})
        self.leases.renew(self.job_id)
