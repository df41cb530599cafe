"""The faults a chaos run injects into a running local cloud, each behind the system's back."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from localcloud.eventarc import to_cloudevent
from localcloud.publish_faults import arm
from localcloud.scenarios.harness import disk_root

KINDS = (
    "kill_worker",  # SIGKILL the worker agent mid-job (the guest halts, the VM goes TERMINATED)
    "stop_vm",  # POST .../stop on a VM running a job, not through ComfyBurst
    "boot_failure",  # the next VM to boot reaches RUNNING but its guest never starts
    "stockout",  # the next starts in a zone fail with ZONE_RESOURCE_POOL_EXHAUSTED
    "preempt",  # simulateMaintenanceEvent on the Spot VM of a running job
    "moving_stockout",  # a zone or a whole region runs out (capacity 0), the last one recovers
    # The region holding most of the pool's VMs runs out (capacity 0) and stays out while any
    # VM of the pool sits in it: its stopped VMs can never start again.
    "pinning_stockout",
    "create_failure",  # the next instances.insert is accepted, then its operation fails
    "quota",  # the next start or insert in a zone's region: QUOTA_EXCEEDED
    "staging_hang",  # the next VM to boot hangs in STAGING until stopped or deleted
    "duplicate_event",  # the done-flag CloudEvent of a finished job delivered again
    "rewrite_done",  # done.json of a finished job written again (a second finalize event)
    "delayed_event",  # a done-flag event held back, delivered much later
    "publish_failure",  # the next result publishes fail (the trigger answers 500)
    "cancel",  # a live job cancelled through the API
)
# Faults aimed at one job's VM while it runs: each may cost that job one attempt.
JOB_FAULTS = ("kill_worker", "stop_vm")
# Faults that hit whichever VM boots next: each may cost one job (unknown beforehand) an attempt.
UNAIMED_VM_FAULTS = ("boot_failure", "staging_hang", "create_failure")


@dataclass
class Injected:
    """One fault that was injected, for the report."""

    kind: str
    target: str
    detail: str = ""
    # How many boots or inserts a fault aimed at no job may fail (each can cost one attempt).
    hits: int = 1


class Injector:
    """Injects faults into the cloud described by `env`; choices come from `rng`."""

    def __init__(
        self,
        env: dict[str, str],
        state_dir: Path,
        rng: random.Random,
        api_key: str | None = None,
    ) -> None:
        self.env = env
        self.state_dir = state_dir
        self.rng = rng
        self.compute = env["COMFYBURST_COMPUTE_ENDPOINT"]
        self.project = env["COMFYBURST_PROJECT_ID"]
        self.signals = env["COMFYBURST_SIGNALS_BUCKET"]
        self.trigger = env["COMFYBURST_ON_DONE_FLAG_URL"]
        self.api = env["COMFYBURST_API_URL"]
        # The caller whose jobs are cancelled (the API answers 401 without a key).
        self.api_headers = {"X-API-Key": api_key} if api_key else {}
        self.session = requests.Session()
        self.held: list[tuple[str, bytes]] = []  # delayed events: (job id, done.json bytes)
        self.outage = False  # a moving stockout is in force
        self.moving: set[str] = set()  # zones the moving stockout holds
        self.pinned: set[str] = set()  # zones the pinning stockout holds
        # (time.time(), zones without capacity from then on): when faults left no zone free.
        self.capacity_log: list[tuple[float, frozenset[str]]] = []
        self._storage: Any = None

    def _blobs(self) -> Any:
        if self._storage is None:
            from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

            self._storage = storage.Client(project=self.project)
        return self._storage.bucket(self.signals)

    # --- VM faults -----------------------------------------------------------------------

    def kill_worker(self, running: list[dict[str, Any]]) -> Injected | None:
        job = self._pick(running)
        if job is None:
            return None
        vm = job["vm"]["name"]
        pid_file = disk_root(self.state_dir) / vm / "agent.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return Injected("kill_worker", job["job_id"], f"{vm} pid {pid}")

    def stop_vm(self, running: list[dict[str, Any]]) -> Injected | None:
        job = self._pick(running)
        if job is None:
            return None
        vm, zone = job["vm"]["name"], job["vm"]["zone"]
        url = f"{self.compute}/compute/v1/projects/{self.project}/zones/{zone}/instances/{vm}/stop"
        self.session.post(url, timeout=30).raise_for_status()
        return Injected("stop_vm", job["job_id"], vm)

    def boot_failure(self) -> Injected:
        # VMs are created on demand under names derived from job and zone: the next boot.
        self._fault({"kind": "boot_failure", "count": 1})
        return Injected("boot_failure", "next VM to boot")

    def staging_hang(self) -> Injected:
        self._fault({"kind": "staging_hang", "count": 1})
        return Injected("staging_hang", "next VM to boot")

    def create_failure(self) -> Injected:
        count = self.rng.randint(1, 2)
        self._fault({"kind": "create_failure", "count": count})
        return Injected("create_failure", "next inserts", f"next {count}", hits=count)

    def quota(self, zones: list[str]) -> Injected:
        zone = self.rng.choice(sorted(zones))
        count = self.rng.randint(1, 3)
        self._fault({"kind": "quota", "zone": zone, "count": count})
        return Injected("quota", zone, f"next {count} starts or inserts")

    def preempt(self, running: list[dict[str, Any]]) -> Injected | None:
        """Compute Engine's own path: simulateMaintenanceEvent on the job's Spot VM."""
        job = self._pick(running)
        if job is None:
            return None
        vm, zone = job["vm"]["name"], job["vm"]["zone"]
        base = f"{self.compute}/compute/v1/projects/{self.project}/zones/{zone}/instances/{vm}"
        response = self.session.post(f"{base}/simulateMaintenanceEvent", timeout=30)
        if response.status_code != 200:  # not up any more (it moved on): try another later
            return None
        return Injected("preempt", job["job_id"], vm)

    def moving_stockout(self, zones: list[str]) -> Injected:
        """The outage moves: a zone, or every zone of a region, has no capacity from now on;
        the previous one recovers. While a pinning stockout holds a region, the moving one
        never takes the last zones with capacity (it only recovers then)."""
        regions = sorted({_region(zone) for zone in zones})
        if self.rng.random() < 0.34:
            region = self.rng.choice(regions)
            out = [zone for zone in sorted(zones) if _region(zone) == region]
        else:
            out = [self.rng.choice(sorted(zones))]
        if self.pinned and set(zones) <= self.pinned | set(out):
            out = []
        self.moving = set(out)
        self._capacity(zones)
        self.outage = True
        return Injected("moving_stockout", ",".join(out) or "none", "capacity 0")

    def pinning_stockout(self, zones: list[str], pool: list[dict[str, Any]]) -> Injected | None:
        """The region holding most of the pool's VMs (`pool`: the stand-in's records) runs
        out and stays out while any of them sits there (`release_pin`); None while the pool
        has no VM or every region but one would be out."""
        if self.pinned or not pool:
            return None
        counts: dict[str, int] = {}
        for vm in pool:
            counts[_region(vm["zone"])] = counts.get(_region(vm["zone"]), 0) + 1
        region = max(sorted(counts), key=lambda r: counts[r])
        out = {zone for zone in zones if _region(zone) == region}
        if not out or out >= set(zones):
            return None
        self.pinned = out
        if set(zones) <= self.moving | out:
            self.moving = set()  # some zone keeps capacity: the moving outage recovers
        self._capacity(zones)
        names = sorted(vm["name"] for vm in pool if vm["zone"] in out)
        return Injected("pinning_stockout", ",".join(sorted(out)), f"holding {names}")

    def release_pin(self, zones: list[str], pool: list[dict[str, Any]]) -> Injected | None:
        """The pinning stockout ends once no VM of the pool sits in its zones."""
        if not self.pinned or any(vm["zone"] in self.pinned for vm in pool):
            return None
        ended = ",".join(sorted(self.pinned))
        self.pinned = set()
        self._capacity(zones)
        # Its own kind: the report's counts stay one per injected fault.
        return Injected("pinning_stockout_end", ended, "ended: no pool VM left in its zones")

    def end_outages(self, zones: Iterable[str]) -> None:
        """The moving outage ends (before the run's end, so the last jobs can run); a pinning
        stockout does not."""
        self.moving = set()
        self._capacity(zones)
        self.outage = False

    def _capacity(self, zones: Iterable[str]) -> None:
        out = self.moving | self.pinned
        body = {"zone_capacity_vms": {zone: 0 for zone in sorted(out)}}
        response = self.session.post(f"{self.compute}/_standin/capacity", json=body, timeout=30)
        response.raise_for_status()
        self.capacity_log.append((time.time(), frozenset(out & set(zones))))

    def stockout(self, zones: list[str]) -> Injected:
        zone = self.rng.choice(sorted(zones))
        count = self.rng.randint(1, 3)
        self._fault({"kind": "stockout", "zone": zone, "count": count, "mode": "sync"})
        return Injected("stockout", zone, f"next {count} starts")

    def _fault(self, fault: dict[str, Any]) -> None:
        response = self.session.post(f"{self.compute}/_standin/faults", json=fault, timeout=30)
        response.raise_for_status()

    # --- event faults --------------------------------------------------------------------

    def _done_bytes(self, job_id: str) -> bytes | None:
        blob = self._blobs().blob(f"jobs/{job_id}/done.json")
        try:
            data: bytes = blob.download_as_bytes()
        except Exception:  # a job ended by the reaper has no done flag
            return None
        return data

    def _deliver(self, job_id: str, data: bytes) -> int:
        name = f"jobs/{job_id}/done.json"
        obj = {"bucket": self.signals, "name": name, "size": len(data)}
        attributes = {"bucketId": self.signals, "objectId": name, "eventType": "OBJECT_FINALIZE"}
        headers, body = to_cloudevent(json.dumps(obj).encode(), attributes, f"chaos-{job_id}")
        return self.session.post(self.trigger, data=body, headers=headers, timeout=60).status_code

    def duplicate_event(self, finished: list[str]) -> Injected | None:
        for job_id in self._shuffled(finished):
            if self._done_bytes(job_id) is not None:
                status = self._deliver(job_id, b"")
                return Injected("duplicate_event", job_id, f"trigger answered {status}")
        return None

    def rewrite_done(self, finished: list[str]) -> Injected | None:
        for job_id in self._shuffled(finished):
            data = self._done_bytes(job_id)
            if data is not None:
                blob = self._blobs().blob(f"jobs/{job_id}/done.json")
                blob.upload_from_string(data, content_type="application/json")
                return Injected("rewrite_done", job_id)
        return None

    def hold_event(self, finished: list[str]) -> Injected | None:
        for job_id in self._shuffled(finished):
            data = self._done_bytes(job_id)
            if data is not None:
                self.held.append((job_id, data))
                return Injected("delayed_event", job_id, "held")
        return None

    def release_held(self) -> list[Injected]:
        released = []
        for job_id, data in self.held:
            status = self._deliver(job_id, data)
            released.append(Injected("delayed_event", job_id, f"delivered late: {status}"))
        self.held.clear()
        return released

    def publish_failure(self) -> Injected:
        count = self.rng.randint(1, 3)
        arm(self.state_dir / "publish_faults", count)
        return Injected("publish_failure", "results topic", f"next {count} publishes")

    def cancel(self, live: list[str]) -> Injected | None:
        if not live:
            return None
        job_id = self.rng.choice(sorted(live))
        response = self.session.post(
            f"{self.api}/jobs/{job_id}:cancel", headers=self.api_headers, timeout=60
        )
        return Injected("cancel", job_id, f"API answered {response.status_code}")

    # --- helpers -------------------------------------------------------------------------

    def _pick(self, jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
        with_vm = sorted((j for j in jobs if j.get("vm")), key=lambda j: j["job_id"])
        return self.rng.choice(with_vm) if with_vm else None

    def _shuffled(self, ids: list[str]) -> list[str]:
        ordered = sorted(ids)
        self.rng.shuffle(ordered)
        return ordered[:5]

    def outages_without_capacity(
        self, zones: Iterable[str], until: float
    ) -> list[tuple[float, float]]:
        """The (start, end) times during which injected outages left no zone of `zones` free."""
        return no_capacity_windows(self.capacity_log, set(zones), until)

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


def _region(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def no_capacity_windows(
    log: list[tuple[float, frozenset[str]]], zones: set[str], until: float
) -> list[tuple[float, float]]:
    """From a capacity log ((time, zones out from then on), in order), the windows in which
    every zone of `zones` was out; one still open ends at `until`."""
    windows: list[tuple[float, float]] = []
    began: float | None = None
    for at, out in log:
        if zones and zones <= out:
            began = at if began is None else began
        elif began is not None:
            windows.append((began, at))
            began = None
    if began is not None:
        windows.append((began, until))
    return windows
