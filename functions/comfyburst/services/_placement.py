"""Placing a job on a VM: lease it, check it, write its metadata, request its start.

For each candidate (domain/scheduling order) until one starts: read `vms/{name}` and write it
back with the lease under a precondition (create-if-absent or update-if-unchanged, so two
dispatchers never both hold a live lease on one VM) while reading the VM (it must still be
TERMINATED; its metadata fingerprint), write the job hint and the deployment config into its
metadata, then request the start. A refused start (CapacityError) releases the lease, cools a
stocked-out VM down and moves on, preferring another zone. Nothing waits for a VM to boot.
Job documents are not touched here: that is the caller's part.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from comfyburst.domain import scheduling
from comfyburst.errors import CapacityError, PreconditionFailed
from comfyburst.ports import Fleet, JobStore, VmStatus
from comfyburst.schema import Job, Lease, VmRecord, VmRef
from comfyburst.services._create import Creator
from comfyburst.services._fleet_view import DEFAULT_MAX_AGE_S, FleetView

logger = logging.getLogger(__name__)

METADATA_JOB_KEY = "comfyburst-job"
METADATA_CONFIG_KEY = "comfyburst-config"
_REQUEST_ID_NAMESPACE = uuid.UUID("6f0c9a9e-3b7e-4c59-9d55-0c6a3f1e2b10")
REASON_ERROR = "dispatch error; the reaper will retry"

# Why a candidate was not used (besides a Compute capacity reason such as a stockout).
LOST = "lost"  # another dispatcher leased it first, or it is not TERMINATED any more
ERROR = "error"  # anything unexpected; placement stops and the job stays queued


def request_id(
    job_id: str, attempt: int, vm_name: str, action: str, lease: Lease | None = None
) -> str:
    """A stable Compute request id, so a retried call is not applied twice.

    With `lease` the id is also tied to that lease (each lease write sets a new `expires_at`):
    a new lease of the same VM for the same job and attempt (a retried submit after a failed
    create, whose start was undone) wants a new start, which Compute must not drop as a
    duplicate of the first one.
    """
    key = f"{job_id}/{attempt}/{vm_name}/{action}"
    if lease is not None:
        key += f"/{lease.job_id}@{lease.expires_at.isoformat()}"
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, key))


@dataclass
class Placement:
    """Where a job went: the VM whose start was requested, or why none."""

    vm: VmRef | None
    reason: str | None = None
    tried: list[tuple[str, str]] = field(default_factory=list)  # (vm name, outcome or reason)
    lease: tuple[VmRecord, object] | None = None  # (the lease document as written, version)

    @property
    def errored(self) -> bool:
        return any(outcome == ERROR for _, outcome in self.tried)


@dataclass
class PoolView:
    """The fleet and lease documents as one dispatch pass sees them."""

    fleet: list[VmStatus]
    records: dict[str, VmRecord]
    fetched_at: float
    avoid_zones: set[str] = field(default_factory=set)


class _Once:
    """Calls `action` the first time only (None: nothing to do)."""

    def __init__(self, action: Callable[[], object] | None) -> None:
        self._action = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


class Placer:
    """Leases and starts VMs; one per process (it caches the pool's state)."""

    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        settings: Any,
        io: Executor,
        view_max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._settings = settings
        self._io = io  # the lease write and the VM read of one candidate run side by side
        self._pool = FleetView(fleet, store, view_max_age_s)
        self._config_json: str | None = None
        self._creator = Creator(store, fleet, settings, self._pool, request_id, self._metadata)

    def view(self, fetched_after: float | None = None) -> PoolView:
        """The pool's state, cached unless older than `fetched_after` (monotonic)."""
        return PoolView(*self._pool.snapshot(fetched_after))

    def place(
        self,
        job: Job,
        now: datetime,
        began: float,
        view: PoolView,
        before_start: Callable[[], object] | None = None,
    ) -> tuple[Placement, PoolView]:
        """Place a job; when a view read before `began` finds nothing, read it again, once.

        `before_start` runs once, just before the first start request (the submit path waits
        there for its request to be stored); if it raises, the lease is released and the
        error propagates.
        """
        once = _Once(before_start)
        placement = self._place(job, now, view, once)
        if placement.vm is None and not placement.errored and view.fetched_at < began:
            view = PoolView(*self._pool.snapshot(began), avoid_zones=view.avoid_zones)
            second = self._place(job, now, view, once)
            if second.vm is not None or second.tried:
                second.tried = [*placement.tried, *second.tried]
                placement = second
        return placement, view

    def undo(self, job: Job, placement: Placement) -> None:
        """Release the lease and stop the VM of a placement that is not wanted after all."""
        if placement.vm is None or placement.lease is None:
            return
        record, version = placement.lease
        self._release(record, version, None)
        vm = placement.vm
        stop_id = request_id(job.job_id, job.attempt, vm.name, "stop", record.lease)
        try:
            self._fleet.stop(vm.zone, vm.name, stop_id)
        except Exception:  # the reaper stops a RUNNING VM without a live lease
            logger.warning("stopping an unneeded VM failed", exc_info=True)

    # --- one placement ---------------------------------------------------------------------

    def _place(self, job: Job, now: datetime, view: PoolView, before_start: _Once) -> Placement:
        candidates = scheduling.rank_candidates(
            job.job_id, job.request.models, view.fleet, view.records, now, self._pool.zones()
        )
        had_candidates = bool(candidates)
        tried: list[tuple[str, str]] = []
        capacity_failures = other_failures = 0
        while candidates:
            candidate = scheduling.next_candidate(candidates, view.avoid_zones)
            assert candidate is not None
            candidates.remove(candidate)
            result = self._try(job, candidate, view, now, before_start)
            if isinstance(result, Placement):
                result.tried = [*tried, (candidate.name, "started")]
                return result
            tried.append((candidate.name, result))
            if result in scheduling.CAPACITY_OUT_REASONS:
                capacity_failures += 1
                view.avoid_zones.add(candidate.zone)
            elif result == ERROR:
                return Placement(None, REASON_ERROR, tried)
            elif result != LOST:
                other_failures += 1  # e.g. RESOURCE_NOT_READY: that VM only
        if self._creator.enabled:  # no stopped VM took it: create one from the template
            created, create_tried = self._creator.create(
                job, now, view.fleet, view.avoid_zones, before_start
            )
            tried.extend(create_tried)
            if created is not None:
                return Placement(created[0], tried=tried, lease=created[1])
            if any(outcome == ERROR for _, outcome in create_tried):
                return Placement(None, REASON_ERROR, tried)
            capacity_failures += sum(
                1 for _, outcome in create_tried if outcome in scheduling.CAPACITY_OUT_REASONS
            )
            had_candidates = had_candidates or bool(create_tried)
        cooling = 0 if had_candidates else scheduling.cooling_down(view.fleet, view.records, now)
        reason = scheduling.queued_reason(
            had_candidates, capacity_failures, other_failures, cooling
        )
        return Placement(None, reason, tried)

    def _try(
        self,
        job: Job,
        candidate: scheduling.Candidate,
        view: PoolView,
        now: datetime,
        before_start: _Once,
    ) -> Placement | str:
        """Lease, check, prepare and start one VM: a Placement when started, else why not."""
        try:
            leased = self._lease(job, candidate, view, now)
        except Exception:
            logger.exception("leasing failed", extra={"job_id": job.job_id, "vm": candidate.name})
            return ERROR
        if isinstance(leased, str):
            return leased
        (record, version), status = leased
        try:
            self._write_metadata(job, status, record.lease)
        except PreconditionFailed:
            self._release(record, version, None)
            return LOST
        except Exception:
            logger.exception(
                "metadata write failed", extra={"job_id": job.job_id, "vm": status.name}
            )
            self._release(record, version, None)
            return ERROR
        try:
            before_start()
        except BaseException:
            self._release(record, version, None)
            raise
        try:
            operation = self._fleet.start(
                candidate.zone,
                candidate.name,
                request_id(job.job_id, job.attempt, candidate.name, "start", record.lease),
            )
        except CapacityError as exc:
            cooldown = scheduling.cooldown_until(
                exc.reason, now, self._settings.stockout_cooldown_s
            )
            view.records[candidate.name] = self._release(record, version, cooldown)
            self._pool.note_zone_refused(
                candidate.zone,
                scheduling.zone_cooldown_until(exc.reason, now, self._settings.stockout_cooldown_s),
            )
            logger.warning(
                "start refused: %s",
                exc.reason,
                extra={"job_id": job.job_id, "vm": candidate.name, "zone": candidate.zone},
            )
            return exc.reason
        except Exception:
            logger.exception("start failed", extra={"job_id": job.job_id, "vm": candidate.name})
            self._release(record, version, None)
            return ERROR
        self._pool.note_status(candidate.name, "STAGING")
        self._pool.note_zone_capacity(candidate.zone, now)
        vm = VmRef(name=candidate.name, zone=candidate.zone, operation=operation)
        return Placement(vm, lease=(record, version))

    def _lease(
        self, job: Job, candidate: scheduling.Candidate, view: PoolView, now: datetime
    ) -> tuple[tuple[VmRecord, object], VmStatus] | str:
        """The lease written and the VM read (side by side), or LOST."""
        record, version = self._store.get_vm(candidate.name)
        if record is not None and (
            record.is_leased(now) or (record.cooldown_until and record.cooldown_until > now)
        ):
            view.records[candidate.name] = record
            self._pool.note_record(record)
            return LOST
        base = record or VmRecord(name=candidate.name, zone=candidate.zone)
        expires_at = now + timedelta(seconds=self._settings.lease_ttl_s)
        leased = base.model_copy(
            update={
                "zone": candidate.zone,
                "lease": Lease(job_id=job.job_id, expires_at=expires_at),
            }
        )
        # Reading the VM after we saw no live lease is as good as after our write: nobody else
        # can take the lease in between (the write is conditional on what we read).
        status_future = self._io.submit(self._fleet.get, candidate.zone, candidate.name)
        try:
            new_version = self._store.put_vm(leased, version)
        except PreconditionFailed:
            status_future.cancel()
            return LOST  # another dispatcher won this VM; the caller moves on
        view.records[candidate.name] = leased
        self._pool.note_record(leased)
        try:
            status = status_future.result()
        except Exception:
            self._release(leased, new_version, None)
            raise
        if status.status != "TERMINATED":
            self._pool.note_status(status.name, status.status)
            view.records[candidate.name] = self._release(leased, new_version, None)
            return LOST
        return (leased, new_version), status

    def _write_metadata(self, job: Job, status: VmStatus, lease: Lease | None) -> None:
        items = {METADATA_JOB_KEY: job.job_id, METADATA_CONFIG_KEY: self._deployment_config()}
        try:
            self._fleet.set_metadata(
                status.zone,
                status.name,
                items,
                status.fingerprint,
                request_id(job.job_id, job.attempt, status.name, "metadata", lease),
            )
        except PreconditionFailed:
            # Something else changed the metadata since we read it: read once more, retry once.
            fresh = self._fleet.get(status.zone, status.name)
            if fresh.status != "TERMINATED":
                raise
            self._fleet.set_metadata(
                fresh.zone,
                fresh.name,
                items,
                fresh.fingerprint,
                request_id(job.job_id, job.attempt, status.name, "metadata-retry", lease),
            )

    def _release(self, record: VmRecord, version: object, cooldown: datetime | None) -> VmRecord:
        released = record.model_copy(
            update={"lease": None, "cooldown_until": cooldown or record.cooldown_until}
        )
        try:
            self._store.put_vm(released, version)
        except PreconditionFailed:
            # Someone changed it since our lease (e.g. the reaper): theirs wins; ours expires.
            logger.warning("lease release lost a race", extra={"vm": record.name})
            return record
        self._pool.note_record(released)
        return released

    def _metadata(self, job: Job) -> dict[str, str]:
        """The metadata a VM gets for a job: the job hint and the deployment config."""
        return {METADATA_JOB_KEY: job.job_id, METADATA_CONFIG_KEY: self._deployment_config()}

    def _deployment_config(self) -> str:
        if self._config_json is None:
            self._config_json = self._settings.deployment_config().model_dump_json()
        return self._config_json


def pass_began() -> float:
    """The monotonic time a dispatch pass starts (views read before it may be re-read)."""
    return time.monotonic()
