"""The pool as dispatch sees it: the fleet listing and the lease documents, cached per process.

Listing every VM (Compute, one call per zone) and every lease document (Firestore) costs far
more than the rest of a submit and grows with the pool, so a process keeps what it read for
`max_age_s` and notes its own changes. A stale view only changes which VM is tried first:
before a VM is used, its lease document is read and written with a precondition and its status
is read again. When a stale view finds nothing, dispatch asks for a view read after it began.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime

from comfyburst.domain.scheduling import ZoneState
from comfyburst.ports import Fleet, JobStore, VmStatus
from comfyburst.schema import VmRecord

DEFAULT_MAX_AGE_S = 5.0


class FleetView:
    """A shared, lock-protected cache of VM statuses and lease documents."""

    def __init__(self, fleet: Fleet, store: JobStore, max_age_s: float = DEFAULT_MAX_AGE_S):
        self._fleet = fleet
        self._store = store
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._statuses: dict[str, VmStatus] = {}
        self._records: dict[str, VmRecord] = {}
        self._fetched_at = float("-inf")
        # Kept across re-reads: what this process learnt of each zone's capacity, per GPU class
        # (a zone out of L4s may still have A100s; quotas are per accelerator type too).
        self._zones: dict[tuple[str, str], ZoneState] = {}

    def snapshot(
        self, fetched_after: float | None = None
    ) -> tuple[list[VmStatus], dict[str, VmRecord], float]:
        """Statuses, records and when they were read (monotonic); re-read when too old or
        older than `fetched_after`. One thread re-reads; the others wait and share it."""
        with self._lock:
            too_old = time.monotonic() - self._fetched_at > self._max_age_s
            if too_old or (fetched_after is not None and self._fetched_at < fetched_after):
                fetched_at = time.monotonic()
                statuses = self._fleet.list()
                records = self._store.list_vms()
                self._statuses = {s.name: s for s in statuses}
                self._records = {r.name: r for r in records}
                self._fetched_at = fetched_at
            return list(self._statuses.values()), dict(self._records), self._fetched_at

    def note_record(self, record: VmRecord) -> None:
        """A lease document as this process just wrote or read it."""
        with self._lock:
            self._records[record.name] = record

    def note_status(self, name: str, status: str) -> None:
        """A VM status this process just caused or saw."""
        with self._lock:
            current = self._statuses.get(name)
            if current is not None:
                self._statuses[name] = replace(current, status=status)

    def note_created(self, status: VmStatus) -> None:
        """A VM this process just created (the next listing will show it too)."""
        with self._lock:
            self._statuses[status.name] = status

    def zones(self, gpu_class: str) -> dict[str, ZoneState]:
        """Each zone's cooldown and last capacity for a GPU class, as this process saw them."""
        with self._lock:
            return {zone: state for (cls, zone), state in self._zones.items() if cls == gpu_class}

    def note_zone_refused(self, gpu_class: str, zone: str, until: datetime | None) -> None:
        """Compute refused a VM of `gpu_class` in `zone` (stockout, quota): skip the zone for
        that class until `until`."""
        if until is None:
            return
        with self._lock:
            key = (gpu_class, zone)
            self._zones[key] = replace(self._zones.get(key, ZoneState()), cooldown_until=until)

    def note_zone_capacity(self, gpu_class: str, zone: str, now: datetime) -> None:
        """Compute accepted a start or create of `gpu_class` in `zone`: capacity at `now`."""
        with self._lock:
            self._zones[(gpu_class, zone)] = ZoneState(cooldown_until=None, capacity_at=now)
