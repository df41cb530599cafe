"""Placing a job on a VM: lease it together with the job (one commit), request its start.

For each candidate (domain/scheduling order) until one starts: read `vms/{name}` with the job
document (one read) while reading the VM (it must still be TERMINATED), then commit the lease
and the job `starting` on it in ONE Firestore commit under both documents' preconditions
(`_job_leases.JobLeases`: two dispatchers never both hold a live lease, a lease never names a
job that does not exist), then request the start. No per-job metadata: the worker learns its
job from the lease; the deployment config is written only when the VM's is missing or stale.
A refused start (CapacityError) gives the lease back and the job back to `queued` (one commit),
cools a stocked-out VM down and moves on, preferring another zone. Nothing waits for a boot.
When no stopped VM can start and the class cannot create, the least recently used stopped VM
in a stocked-out zone is deleted (domain/scheduling.stockout_replacement, services/prune.py):
the job stays queued, and a later pass creates its successor where there is capacity, once
Compute no longer lists the old one (the class's limits hold throughout).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from comfyburst.domain import dispatch_rule, gpu_classes, scheduling
from comfyburst.errors import CapacityError, JobExists, PreconditionFailed
from comfyburst.ports import Fleet, JobStore, VmStatus
from comfyburst.schema import DeploymentConfig, Job, Lease, VmRecord, VmRef
from comfyburst.services._create import Creator
from comfyburst.services._fleet_view import DEFAULT_MAX_AGE_S, FleetView
from comfyburst.services._job_leases import JobGone, JobLeases
from comfyburst.services.prune import DELETED_PREFIX, retire_vm

logger = logging.getLogger(__name__)

METADATA_CONFIG_KEY = "comfyburst-config"
_REQUEST_ID_NAMESPACE = uuid.UUID("6f0c9a9e-3b7e-4c59-9d55-0c6a3f1e2b10")
REASON_ERROR = "dispatch error; the reaper will retry"
REASON_UNKNOWN_CLASS = "the deployment has no GPU class"

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
    job: Job | None = None  # the job as stored afterwards (starting on `vm`, or queued)

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
    suggested: list[str] = field(default_factory=list)  # zonesAvailable of refused starts


class Placer:
    """Leases and starts VMs; one per process (it caches the pool's state)."""

    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        settings: Any,
        io: Executor,
        view_max_age_s: float = DEFAULT_MAX_AGE_S,
        retires: bool = False,
    ) -> None:
        self._store = store
        self._fleet = fleet
        # Only the reaper's identity may delete VMs (terraform/iam.tf: the API's role has no
        # compute.instances.delete), so only its dispatcher replaces a stocked-out VM.
        self._retires = retires
        self._settings = settings
        self._io = io  # the lease write and the VM read of one candidate run side by side
        self._pool = FleetView(fleet, store, view_max_age_s)
        self._config_json: str | None = None
        self._creator = Creator(store, fleet, settings, self._pool, request_id, self._metadata)
        self._classes = gpu_classes.for_settings(settings)

    def view(self, fetched_after: float | None = None) -> PoolView:
        """The pool's state, cached unless older than `fetched_after` (monotonic)."""
        return PoolView(*self._pool.snapshot(fetched_after))

    def place(
        self, job: Job, now: datetime, began: float, view: PoolView, leases: JobLeases
    ) -> tuple[Placement, PoolView]:
        """Place a job; when a view read before `began` finds nothing, read it again, once.

        Every lease is written through `leases`, in one commit with the job document. Raises
        JobExists (the job to create is stored already) or JobGone (the stored job left
        `queued`): nothing of this placement is held then.
        """
        placement = self._place(job, now, view, leases)
        if placement.vm is None and not placement.errored and view.fetched_at < began:
            view = PoolView(
                *self._pool.snapshot(began), avoid_zones=view.avoid_zones, suggested=view.suggested
            )
            second = self._place(job, now, view, leases)
            if second.vm is not None or second.tried:
                second.tried = [*placement.tried, *second.tried]
                placement = second
        return placement, view

    # --- one placement ---------------------------------------------------------------------

    def _place(self, job: Job, now: datetime, view: PoolView, leases: JobLeases) -> Placement:
        gpu_class = self._classes.get(job.gpu_class)
        if gpu_class is None:  # a class the deployment no longer declares
            return Placement(None, f"{REASON_UNKNOWN_CLASS} {job.gpu_class}")
        # A job only ever lands on a VM of its own class (the reaper's rule too).
        fleet = [
            s for s in view.fleet if dispatch_rule.serves(self._classes, s.labels, job.gpu_class)
        ]
        zones = self._pool.zones(gpu_class.name)
        environment = job.options.environment  # its VMs first (no layer to fetch)
        candidates = scheduling.rank_candidates(
            job.job_id, job.request.models, fleet, view.records, now, zones, environment
        )
        had_candidates = bool(candidates)
        tried: list[tuple[str, str]] = []
        capacity_failures = other_failures = 0
        while candidates:
            candidate = scheduling.next_candidate(candidates, view.avoid_zones)
            assert candidate is not None
            candidates.remove(candidate)
            result = self._try(job, candidate, view, now, leases, gpu_class.name)
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
        if gpu_class.creates:  # no stopped VM took it: create one from the class's template
            created, create_tried = self._creator.create(
                job, now, fleet, view.avoid_zones, leases, gpu_class
            )
            tried.extend(create_tried)
            if created is not None:
                return Placement(created[0], tried=tried, lease=created[1], job=leases.job)
            if any(outcome == ERROR for _, outcome in create_tried):
                return Placement(None, REASON_ERROR, tried)
            capacity_failures += sum(
                1 for _, outcome in create_tried if outcome in scheduling.CAPACITY_OUT_REASONS
            )
            had_candidates = had_candidates or bool(create_tried)
            if self._replace(fleet, view, now, gpu_class):
                return Placement(None, scheduling.REASON_REPLACING, tried)
        cooling = 0 if had_candidates else scheduling.cooling_down(fleet, view.records, now)
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
        leases: JobLeases,
        gpu_class: str,
    ) -> Placement | str:
        """Lease (with the job, one commit) and start one VM of `gpu_class`: a Placement, else
        why not."""
        # The VM read runs beside the documents' read: both are reads, and the commit is
        # conditional on the documents as read, so nobody can take the lease in between.
        status_future = self._io.submit(self._fleet.get, candidate.zone, candidate.name)
        try:
            leased = self._lease(candidate, view, now, leases, status_future)
        except (JobExists, JobGone):
            status_future.cancel()
            raise
        except Exception:
            logger.exception("leasing failed", extra={"job_id": job.job_id, "vm": candidate.name})
            status_future.cancel()
            return ERROR
        if isinstance(leased, str):
            return leased
        record, version = leased
        assert record.lease is not None
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
            view.records[candidate.name] = self._give_back(
                leases, record, version, cooldown, exc.reason
            )
            self._pool.note_zone_refused(
                gpu_class,
                candidate.zone,
                scheduling.zone_cooldown_until(exc.reason, now, self._settings.stockout_cooldown_s),
            )
            view.suggested.extend(z for z in exc.zones_available if z not in view.suggested)
            logger.warning(
                "start refused: %s",
                exc.reason,
                extra={"job_id": job.job_id, "vm": candidate.name, "zone": candidate.zone},
            )
            return exc.reason
        except Exception:
            logger.exception("start failed", extra={"job_id": job.job_id, "vm": candidate.name})
            view.records[candidate.name] = self._give_back(
                leases, record, version, None, REASON_ERROR
            )
            return ERROR
        self._pool.note_status(candidate.name, "STAGING")
        self._pool.note_zone_capacity(gpu_class, candidate.zone, now)
        vm = VmRef(name=candidate.name, zone=candidate.zone, operation=operation)
        return Placement(vm, lease=(record, version), job=leases.job)

    def _replace(
        self, fleet: list[VmStatus], view: PoolView, now: datetime, gpu_class: gpu_classes.GpuClass
    ) -> bool:
        """Delete the stopped VM `stockout_replacement` names; whether Compute took the delete."""
        replacement = scheduling.stockout_replacement(
            [z for z in gpu_class.zones if gpu_class.template_for(z)],
            fleet,
            view.records,
            self._pool.zones(gpu_class.name),
            scheduling.PoolLimits(gpu_class.max_vms, gpu_class.max_vms_per_zone),
            now,
            view.suggested,
            view.avoid_zones,
        )
        if replacement is None:
            return False
        if not self._retires:  # the reaper's next pass replaces it
            return True
        victim = replacement.vm
        why = f"{scheduling.REASON_REPLACING}; its successor may go to {replacement.zones}"
        try:
            outcome = retire_vm(self._store, self._fleet, victim, now, why, check_stopped=True)
        except Exception:
            logger.exception("replacing a stocked-out VM failed", extra={"vm": victim.name})
            return False
        logger.info("stocked-out VM %s: %s", victim.name, outcome, extra={"vm": victim.name})
        if not outcome.startswith(DELETED_PREFIX) and outcome != "already gone":
            return False
        self._pool.note_status(victim.name, "STOPPING")
        # Its delete lease in the view: this pass replaces no other VM of the class.
        with contextlib.suppress(Exception):
            record, _ = self._store.get_vm(victim.name)
            if record is not None:
                view.records[victim.name] = record
                self._pool.note_record(record)
        return True

    def _lease(
        self,
        candidate: scheduling.Candidate,
        view: PoolView,
        now: datetime,
        leases: JobLeases,
        status_future: Future[VmStatus],
    ) -> tuple[VmRecord, object] | str:
        """The lease committed with the job (the VM still TERMINATED), or LOST."""
        record, version = leases.read(candidate.name)
        if record is not None and (
            record.is_leased(now) or (record.cooldown_until and record.cooldown_until > now)
        ):
            view.records[candidate.name] = record
            self._pool.note_record(record)
            return LOST
        status = status_future.result()
        if status.status != "TERMINATED":
            self._pool.note_status(status.name, status.status)
            return LOST
        if not self._config_current(status):
            try:
                self._write_config(status)
            except PreconditionFailed:
                return LOST  # someone else changed its metadata since we read it
        base = record or VmRecord(name=candidate.name, zone=candidate.zone)
        expires_at = now + timedelta(seconds=self._settings.lease_ttl_s)
        leased = base.model_copy(
            update={
                "zone": candidate.zone,
                "lease": Lease(job_id=leases.job.job_id, expires_at=expires_at),
            }
        )
        try:
            new_version = leases.lease(leased, version, VmRef(name=status.name, zone=status.zone))
        except (JobExists, JobGone):
            raise
        except PreconditionFailed:
            return LOST  # another dispatcher won this VM; the caller moves on
        view.records[candidate.name] = leased
        self._pool.note_record(leased)
        return leased, new_version

    def _config_current(self, status: VmStatus) -> bool:
        """Whether the VM's metadata holds this deployment's config (its template wrote it at
        create; a redeploy with other settings, or a VM made without it, needs a write)."""
        stored = status.metadata.get(METADATA_CONFIG_KEY)
        if stored is None:
            return False
        if stored == self._deployment_config():
            return True
        try:
            theirs = DeploymentConfig.model_validate_json(stored)
        except ValueError:
            return False
        return bool(theirs == self._settings.deployment_config())

    def _write_config(self, status: VmStatus) -> None:
        items = {METADATA_CONFIG_KEY: self._deployment_config()}
        digest = hashlib.sha256(items[METADATA_CONFIG_KEY].encode()).hexdigest()[:16]
        self._fleet.set_metadata(
            status.zone,
            status.name,
            items,
            status.fingerprint,
            request_id("config", 0, status.name, f"metadata/{digest}/{status.fingerprint}"),
        )
        logger.info("deployment config written", extra={"vm": status.name})

    def _give_back(
        self,
        leases: JobLeases,
        record: VmRecord,
        version: object,
        cooldown: datetime | None,
        reason: str,
    ) -> VmRecord:
        """A refused start: the lease released and the job back to queued, in one commit."""
        released = record.model_copy(
            update={"lease": None, "cooldown_until": cooldown or record.cooldown_until}
        )
        try:
            leases.give_back(released, version, reason)
        except Exception:  # the lease expires; the reaper requeues a job whose VM never booted
            logger.exception("giving the lease back failed", extra={"vm": record.name})
            return record
        self._pool.note_record(released)
        return released

    def _metadata(self, job: Job) -> dict[str, str]:
        """The metadata a VM is created with: the deployment config (no job: the worker
        learns its job from the VM's lease)."""
        return {METADATA_CONFIG_KEY: self._deployment_config()}

    def _deployment_config(self) -> str:
        if self._config_json is None:
            self._config_json = self._settings.deployment_config().model_dump_json()
        return self._config_json


def pass_began() -> float:
    """The monotonic time a dispatch pass starts (views read before it may be re-read)."""
    return time.monotonic()
