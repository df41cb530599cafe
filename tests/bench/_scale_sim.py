"""The scale benchmark's moving parts: a store that logs every document write, simulated VM
guests running the real worker agent, the done-flag pump and the reaper loop.

What is real: the Firestore, Pub/Sub and Cloud Storage emulators, the Compute stand-in (its
boot and stop delays), and in this process the submit use case, the dispatcher (lease,
create from the template or start a stopped VM), the worker agent's claim / lease / heartbeat /
drain / done-flag code (`comfyburst_worker.agent.Agent`), the completion use case fed by the
bucket's real notifications, and the reaper.

What is simulated: the VM guest. When the stand-in says a VM is RUNNING, a thread waits the
stated guest boot time, then runs the real `Agent` on it, whose job runner only holds the job
for the stated work time (no ComfyUI, no model fetch, no outputs); when the agent finds no more
work it powers the VM off (a stop call, as the guest's `poweroff` ends in TERMINATED).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class WriteLog:
    """Every document write as (monotonic time, document path); jobs' terminal times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writes: list[tuple[float, str]] = []
        self.terminal: dict[str, float] = {}

    def add(self, *paths: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.writes.extend((now, p) for p in paths)

    def ended(self, job_id: str) -> None:
        with self.lock:
            self.terminal.setdefault(job_id, time.monotonic())

    def peak_per_document(self, window_s: float = 1.0) -> tuple[int, str, int]:
        """(most writes within any `window_s` on one document, that document, documents)."""
        by_doc: dict[str, list[float]] = defaultdict(list)
        with self.lock:
            for at, path in self.writes:
                by_doc[path].append(at)
        best, best_doc = 0, ""
        for path, times in by_doc.items():
            times.sort()
            low = 0
            for high, at in enumerate(times):
                while at - times[low] > window_s:
                    low += 1
                if high - low + 1 > best:
                    best, best_doc = high - low + 1, path
        return best, best_doc, len(by_doc)


class CountingStore:
    """A JobStore that forwards to the real adapter and logs each document it writes.

    A transaction whose mutation declined (returned None) writes nothing and is not logged; a
    retried transaction is logged once, for the attempt that committed."""

    def __init__(self, inner: Any, log_: WriteLog) -> None:
        self._real, self._log = inner, log_
        self._fenced = False

    def fence(self) -> None:
        """Refuse every call from now on: agents still in this run fail and stop, instead of
        writing into the next run's documents."""
        self._fenced = True

    @property
    def _inner(self) -> Any:
        if self._fenced:
            raise RuntimeError("this run is over")
        return self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_job(self, job: Any) -> Any:
        stored, created = self._inner.create_job(job)
        if created:
            self._log.add(f"jobs/{job.job_id}", *self._key(job))
        return stored, created

    def update_job(self, job_id: str, mutate: Callable[[Any], Any]) -> Any:
        wrote: list[bool] = []

        def counted(job: Any) -> Any:
            result = mutate(job)
            wrote.append(result is not None)
            return result

        job = self._inner.update_job(job_id, counted)
        if wrote and wrote[-1]:
            self._log.add(f"jobs/{job_id}")
        if job.state.terminal:
            self._log.ended(job_id)
        return job

    def patch_job(self, job_id: str, fields: dict[str, object]) -> None:
        self._inner.patch_job(job_id, fields)
        self._log.add(f"jobs/{job_id}")

    def put_vm(self, vm: Any, expected_version: object | None) -> object:
        version = self._inner.put_vm(vm, expected_version)
        self._log.add(f"vms/{vm.name}")
        return version

    def commit(self, vms: Any, job: Any = None) -> Any:
        out = self._inner.commit(vms, job)
        paths = [f"vms/{w.record.name}" for w in vms]
        if job is not None:
            paths.append(f"jobs/{job.job.job_id}")
            if job.version is None:
                paths += self._key(job.job)
        self._log.add(*paths)
        if job is not None and job.job.state.terminal:
            self._log.ended(job.job.job_id)
        return out

    @staticmethod
    def _key(job: Any) -> list[str]:
        return [f"idempotency/{job.idempotency_key}"] if job.idempotency_key else []


class _Background:
    """A daemon thread running `_loop` until `close()` sets `_stop`."""

    join_s = 15.0

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end (what fails after this is the run's end, not a finding)."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self._thread.join(timeout=self.join_s)


# --- the simulated guest ---------------------------------------------------------------------


class _Idle:
    """ComfyUI, its websocket follower, the model cache, the model view and the folders of a
    guest that runs no ComfyUI: every call the agent makes on them succeeds at once."""

    def wait_idle(self, *_: Any) -> None: ...

    def close(self) -> None: ...

    def clear_partials(self) -> None: ...

    def wait_for_mirrors(self) -> None: ...

    def clear(self) -> None: ...

    def empty(self) -> int:
        return 0


class HeldRunner:
    """The agent's job runner: holds the job for `work_s` (less if it is stopped)."""

    prompt_posted = False

    def __init__(self, work_s: float) -> None:
        self.work_s = work_s

    def run(self, job: Any, stop: Any, timings: Any, *_: Any, **__: Any) -> Any:
        from comfyburst.schema import DoneStatus
        from comfyburst_worker.job_runner import RunResult

        began = time.monotonic()
        while time.monotonic() - began < self.work_s:
            if stop.reason is not None or stop.lost:
                break
            time.sleep(min(0.05, self.work_s))
        if stop.lost:
            return RunResult(None)
        if stop.reason is not None:
            return RunResult(stop.reason, timings=timings)
        timings.execution_s = round(time.monotonic() - began, 4)
        return RunResult(DoneStatus.SUCCEEDED, timings=timings)


class Guests(_Background):
    """Watches the stand-in; on each boot of a VM runs the real agent there, then stops it."""

    def __init__(
        self,
        instances: Callable[[], list[dict[str, Any]]],
        power_off: Callable[[str, str], None],
        services: Callable[[Any, dict[str, str]], Any],
        work_s: float,
        guest_boot_s: float,
    ) -> None:
        self.instances, self.power_off = instances, power_off
        self.services, self.work_s, self.guest_boot_s = services, work_s, guest_boot_s
        self._seen: set[tuple[str, str | None]] = set()
        self.agent_errors = 0
        super().__init__("guests")

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                vms = self.instances()
            except Exception as exc:  # the stand-in busy for a moment: look again
                log.warning("listing VMs failed: %s", exc)
                continue
            for vm in vms:
                key = (vm["name"], vm["last_start_at"])
                if vm["status"] == "RUNNING" and key not in self._seen:
                    self._seen.add(key)
                    threading.Thread(target=self._life, args=(vm,), daemon=True).start()

    def _life(self, vm: dict[str, Any]) -> None:
        from comfyburst.schema import VmRef
        from comfyburst_worker.agent import Agent

        time.sleep(self.guest_boot_s)
        ref = VmRef(name=vm["name"], zone=vm["zone"])
        try:
            services = self.services(ref, vm["metadata"])
            agent = Agent(services, ref)
            agent.runner = HeldRunner(self.work_s)
            agent.run(_boot_job(services, ref))
        except Exception:
            if not self._stop.is_set():
                self.agent_errors += 1
                log.exception("agent on %s failed", vm["name"])
        finally:
            # The guest's poweroff: the VM ends TERMINATED, its disk kept.
            self.power_off(vm["zone"], vm["name"])


def _boot_job(services: Any, vm: Any) -> str | None:
    """The job this boot is for, as the worker's entry point finds it: from the VM's lease
    (`claims.boot_lease`)."""
    from comfyburst_worker.claims import boot_lease

    return boot_lease(services.store, vm, services.clock.now()).job_id


def idle_parts() -> _Idle:
    """The stand-ins for ComfyUI and the disk the agent's services hold."""
    return _Idle()


# --- the done-flag trigger and the reaper -------------------------------------------------


class DonePump(_Background):
    """Pulls the bucket notifications (what Eventarc delivers) and runs the completion use
    case on each, in a few threads, as the on_done_flag function would."""

    def __init__(self, subscription: str, handle: Callable[[bytes], Any], workers: int) -> None:
        from google.cloud.pubsub_v1 import SubscriberClient

        self.subscription, self.handle = subscription, handle
        self.client = SubscriberClient()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="done")
        self.errors = 0
        super().__init__("done-pump")

    def _loop(self) -> None:
        from google.api_core import exceptions as gexc

        while not self._stop.is_set():
            try:
                response = self.client.pull(
                    request={"subscription": self.subscription, "max_messages": 100}, timeout=5
                )
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                continue
            received = list(response.received_messages)
            if not received:
                continue
            done = list(self.pool.map(self._one, [r.message.data for r in received]))
            ack = [r.ack_id for r, ok in zip(received, done, strict=True) if ok]
            if ack:
                self.client.acknowledge(request={"subscription": self.subscription, "ack_ids": ack})

    def _one(self, data: bytes) -> bool:
        try:
            self.handle(data)
            return True
        except Exception:  # not acked: delivered again, as Eventarc retries a 500
            if not self._stop.is_set():
                self.errors += 1
                log.exception("completion failed")
            return False

    def close(self) -> None:
        super().close()
        self.pool.shutdown(wait=True)
        self.client.close()


class Periodic(_Background):
    """Runs `action` every `period_s` in a thread until closed (the reaper's scheduler)."""

    join_s = 60.0

    def __init__(self, action: Callable[[], Any], period_s: float) -> None:
        self.action, self.period_s = action, period_s
        self.runs = 0
        super().__init__("periodic")

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.action()
                self.runs += 1
            except Exception:
                log.exception("periodic action failed")
