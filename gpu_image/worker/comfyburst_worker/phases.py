"""The worker's part of a job's phases, on the VM's wall clock: the guest's boot, the agent's
start, ComfyUI's first answer (probed from the agent's start, so its boot overlaps the claim
and the model fetch), and per job the claim, the models, the first step and the end.

The completion side adds the dispatcher's request and Compute's RUNNING (the guest cannot see
`lastStartTimestamp`); docs/ARCHITECTURE.md says where each comes from.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from comfyburst.ports import Clock
from comfyburst.schema import JobPhases

log = logging.getLogger(__name__)

_UPTIME = Path("/proc/uptime")


def guest_booted_at(now: datetime, override_epoch_s: float | None = None) -> datetime | None:
    """When the guest's kernel booted: now minus its uptime (CLOCK_BOOTTIME seconds), or the
    epoch seconds the local cloud's guest passes (its "kernel" is a process on the host)."""
    if override_epoch_s is not None:
        return datetime.fromtimestamp(override_epoch_s, UTC)
    try:
        uptime_s = float(_UPTIME.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return now - timedelta(seconds=uptime_s)


def wall_of(monotonic_s: float, now: datetime) -> datetime:
    """The wall-clock moment of an earlier `time.monotonic()` reading."""
    return now - timedelta(seconds=max(0.0, time.monotonic() - monotonic_s))


class ComfyReadyProbe:
    """Polls ComfyUI's `GET /system_stats` in the background until its first 200; the time it
    answered is the boot's "ComfyUI ready". Never gates a job (the runner waits on its own)."""

    def __init__(self, base_url: str, clock: Clock, timeout_s: float) -> None:
        self.base_url, self.clock, self.timeout_s = base_url.rstrip("/"), clock, timeout_s
        self.ready_at: datetime | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="comfy-ready", daemon=True)

    def start(self) -> ComfyReadyProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        delay = 0.05
        with requests.Session() as session:
            while not self._halt.is_set() and time.monotonic() < deadline:
                try:
                    if session.get(f"{self.base_url}/system_stats", timeout=5).status_code == 200:
                        self.ready_at = self.clock.now()
                        return
                except requests.RequestException:
                    pass
                self._halt.wait(delay)
                delay = min(delay * 2, 0.5)
        log.warning("ComfyUI at %s did not answer while probed", self.base_url)


class PhaseLog:
    """Hands each claimed job its phases; the first job of the boot gets the boot's steps.

    Warm time is no job's: a VM that booted with no job (the reaper started it for its class's
    warm schedule), or that holds the warm lease past its drain grace, idles for the schedule.
    The job it then claims gets neither the boot's steps nor that idle (`warm_since_at` ends its
    idle), and `end_warm` hands the stretch to the agent, which records it apart.
    """

    def __init__(
        self,
        clock: Clock,
        agent_up_at: datetime,
        booted_at: datetime | None = None,
        probe: ComfyReadyProbe | None = None,
    ) -> None:
        self.clock, self.agent_up_at, self.booted_at, self.probe = (
            clock,
            agent_up_at,
            booted_at,
            probe,
        )
        self._boot_unclaimed = True
        self.last_done_at: datetime | None = None  # the end of the latest run on this VM
        self.warm_since: datetime | None = None  # the current warm stretch's start

    def booted_without_job(self) -> None:
        """The VM was started for the warm schedule: from the agent's start (a restarted
        agent's too: the time before it is on the jobs it ran) until a claim is a warm
        stretch, not a job's; the boot's steps are nobody's."""
        self._boot_unclaimed = False
        self.warm_since = self.agent_up_at

    def hold_warm(self, at: datetime) -> None:
        """The VM holds the warm lease from `at` (a stretch already begun goes on). Before
        any claim of this boot (its boot job was not claimable), from the agent's start."""
        if self.warm_since is None:
            self.warm_since = self.agent_up_at if self._boot_unclaimed else at

    def warm_so_far(self) -> tuple[datetime, datetime] | None:
        """The warm stretch on, up to now (it goes on)."""
        return None if self.warm_since is None else (self.warm_since, self.clock.now())

    def end_warm(self) -> tuple[datetime, datetime] | None:
        """The warm stretch that ends now (a claim, or power-off), if one is on."""
        started, self.warm_since = self.warm_since, None
        return None if started is None else (started, self.clock.now())

    def claimed(self, *, drained: bool) -> JobPhases:
        """Phases of a job claimed now; `drained`: found by the drain poll (the VM idled).
        A warm stretch on stays on until `end_warm`."""
        phases = JobPhases(claimed_at=self.clock.now())
        if self.warm_since is not None:
            self._boot_unclaimed = False
            phases.idle_since_at = self.last_done_at
            phases.warm_since_at = self.warm_since
        elif self._boot_unclaimed:
            self._boot_unclaimed = False
            phases.guest_booted_at, phases.agent_up_at = self.booted_at, self.agent_up_at
        elif drained:
            phases.idle_since_at = self.last_done_at
        return phases

    def done(self, phases: JobPhases, comfy_seen_at: datetime | None = None) -> JobPhases:
        """The run ended now; the boot's first job also gets ComfyUI's first answer."""
        phases.done_at = self.last_done_at = self.clock.now()
        if phases.agent_up_at is not None:
            # Two pollers see ComfyUI answer: the probe and the runner's own wait
            # (`comfy_seen_at`). On a loaded VM the wait can get the first 200 while the probe
            # sleeps between polls, and a quick job ends before the probe polls again; the
            # earlier answer is the boot's "ComfyUI ready" (issue #23).
            probed = self.probe.ready_at if self.probe is not None else None
            seen = [at for at in (probed, comfy_seen_at) if at is not None]
            phases.comfyui_ready_at = min(seen) if seen else None
        return phases

    def idle_after_s(self) -> float | None:
        """Seconds since the latest run ended (the VM's idle before it powers off), up to a
        warm stretch's start (the stretch is recorded apart)."""
        if self.last_done_at is None:
            return None
        end = self.warm_since or self.clock.now()
        return round(max(0.0, (end - self.last_done_at).total_seconds()), 3)
