"""Spot preemption: notice it, stop the job's run, and put the job back in the queue at once.

Compute Engine preempts a Spot VM by turning `instance/preempted` TRUE in the metadata server,
sending the guest its shutdown signal and, about 30 s later, powering it off. A background
thread long-polls that value (`wait_for_change`, with the last ETag so no change is missed
between polls). On TRUE the job being run is requeued in Firestore as a preemption (attempt+1,
`preemptions`+1, which the attempt limit does not count), its ComfyUI prompt is interrupted,
and no done flag is written; the agent claims nothing more and powers off.

The shutdown signal comes at about the same moment as the flag, so the agent's SIGTERM handler
(`on_shutdown_signal`) reads the flag itself and finishes the requeue before the process ends;
any other SIGTERM ends the process as before.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Protocol

import requests

from comfyburst.domain.jobs import requeue_preempted
from comfyburst.ports import Clock, JobStore
from comfyburst.schema import Job
from comfyburst.states import JobState

log = logging.getLogger(__name__)

PREEMPTED_PATH = "instance/preempted"
# Each long poll is bounded so a dead connection is noticed; the ETag carries over.
_POLL_TIMEOUT_S = 60
_RETRY_S = 1.0
# Within the 30 s Compute Engine gives a preempted Spot VM before its hard power-off.
_REQUEUE_WAIT_S = 20.0


class _Stoppable(Protocol):
    def request(self, reason: None, lost: bool = False) -> None: ...


class PreemptionWatch:
    """Watches `instance/preempted` on `metadata_host`; `preempted` is set once it is TRUE."""

    def __init__(
        self,
        metadata_host: str,
        store: JobStore,
        clock: Clock,
        vm_name: str,
        session: requests.Session | None = None,
        on_preempted: Callable[[], None] | None = None,
        fallback_class: str | None = None,
    ) -> None:
        self.host, self.store, self.clock, self.vm_name = metadata_host, store, clock, vm_name
        # The standard class a job moves to at the preemption cap (DeploymentConfig).
        self.fallback_class = fallback_class
        self._session = session or requests.Session()
        self._on_preempted = on_preempted
        self.preempted = threading.Event()
        self.handled = threading.Event()  # the notice was acted on (requeued, or nothing ran)
        self._halt = threading.Event()
        # Re-entrant: the SIGTERM handler may run in the main thread while it holds it.
        self._lock = threading.RLock()
        self._job: Job | None = None
        self._stop: _Stoppable | None = None
        self._acting = False  # a requeue is under way (in the watch thread or the handler)
        # Run at a shutdown signal (a stop or a preemption) before the process ends: what the
        # agent must still record (its warm stretch).
        self.shutdown_hooks: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="preemption-watch", daemon=True)

    def start(self) -> PreemptionWatch:
        self._thread.start()
        return self

    def close(self) -> None:
        self._halt.set()

    def bind(self, job: Job, stop: _Stoppable) -> None:
        """The job now running on this VM and how to stop its run; a notice stops it at once."""
        with self._lock:
            self._job, self._stop = job, stop
        if self.preempted.is_set():
            self._act()

    def unbind(self) -> None:
        with self._lock:
            self._job, self._stop = None, None

    # --- the watch ---------------------------------------------------------------------------

    def _run(self) -> None:
        etag: str | None = None
        while not self._halt.is_set():
            try:
                value, etag = self._poll(etag)
            except Exception as exc:  # a metadata hiccup: try again shortly
                log.warning("preemption watch: %s", exc)
                self._halt.wait(_RETRY_S)
                continue
            if value == "TRUE":
                log.warning("%s is being preempted", self.vm_name)
                self.preempted.set()
                self._act()
                if self._on_preempted is not None:
                    self._on_preempted()
                return

    def _poll(self, etag: str | None) -> tuple[str, str | None]:
        params = {"wait_for_change": "true", "timeout_sec": str(_POLL_TIMEOUT_S)}
        if etag:
            params["last_etag"] = etag
        resp = self._session.get(
            f"http://{self.host}/computeMetadata/v1/{PREEMPTED_PATH}",
            params=params,
            headers={"Metadata-Flavor": "Google"},
            timeout=_POLL_TIMEOUT_S + 10,
        )
        resp.raise_for_status()
        return resp.text.strip(), resp.headers.get("ETag") or etag

    def on_shutdown_signal(self, signum: int, _frame: object) -> None:
        """SIGTERM: when it is a preemption, requeue the running job first; then end as the
        default action would."""
        try:
            if not self.preempted.is_set() and self._read_now() == "TRUE":
                log.warning("%s is being preempted (shutdown signal)", self.vm_name)
                self.preempted.set()
            if self.preempted.is_set():
                self._act()
                self.handled.wait(_REQUEUE_WAIT_S)
        except Exception:
            log.exception("preemption handling at shutdown failed")
        finally:
            for hook in self.shutdown_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("shutdown hook failed")
            self._halt.set()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _read_now(self) -> str:
        resp = self._session.get(
            f"http://{self.host}/computeMetadata/v1/{PREEMPTED_PATH}",
            headers={"Metadata-Flavor": "Google"},
            timeout=5,
        )
        resp.raise_for_status()
        return resp.text.strip()

    def _act(self) -> None:
        with self._lock:
            job, stop = self._job, self._stop
            self._job = self._stop = None
            acting, self._acting = self._acting, self._acting or job is not None
        if job is None or stop is None:
            if not acting:
                self.handled.set()
            return
        try:
            self._requeue(job)
        finally:
            # Interrupts the ComfyUI prompt; the run ends without a done flag.
            stop.request(None, lost=True)
            self.handled.set()

    def _requeue(self, job: Job) -> None:
        now = self.clock.now()

        def mutate(current: Job) -> Job | None:
            ours = (
                current.state in (JobState.STARTING, JobState.RUNNING)
                and current.attempt == job.attempt
                and current.vm is not None
                and current.vm.name == self.vm_name
            )
            return requeue_preempted(current, now, self.fallback_class) if ours else None

        stored = self.store.update_job(job.job_id, mutate)
        log.info(
            "job %s: requeued after preemption (attempt %d, preemptions %d)",
            job.job_id,
            stored.attempt,
            stored.preemptions,
        )
