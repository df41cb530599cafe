"""Creating a GPU VM for a job when no stopped VM takes it: lease, then instances.insert.

For each zone of the job's GPU class (domain/scheduling.create_zones order, within the class's
limits) the VM's name is derived from job, attempt and zone, its lease document `vms/{name}`
is created (create-if-absent, so two dispatchers never create the same VM twice) in one commit
with the job `starting` on it (`_job_leases`), then the VM is inserted from the class's
template for the zone's region, labelled and attributed with its class, with the deployment
config in its metadata (no job: its worker reads the lease) and a request id derived from the
same,
so a retried insert is the same insert. Between the lease and the insert the VM takes a slot
of its class in the class's reservation document (`JobStore.reserve_slot`, one transaction):
the class's limits count what Compute lists plus what is reserved, so concurrent creators
never exceed them; a retried create of the name finds its own slot. A refused or failed create
gives its slot back where it gives the lease back. A refusal (stockout, quota) gives the lease
and the job back (one commit), cools the zone down in this process and moves on, to the zones
Compute named first. Nothing waits for the boot; the create waits at most `create_wait_s`
for Compute's capacity check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from comfyburst.domain import gpu_classes, scheduling
from comfyburst.domain.gpu_classes import GpuClass
from comfyburst.errors import CapacityError, JobExists, PreconditionFailed
from comfyburst.ports import Fleet, JobStore, SlotRequest, VmStatus
from comfyburst.schema import Job, Lease, VmRecord, VmRef
from comfyburst.services._fleet_view import FleetView
from comfyburst.services._job_leases import JobGone, JobLeases

logger = logging.getLogger(__name__)

CREATED_KEY, CREATED_VALUE = scheduling.CREATED_LABEL

CREATED = "created"
LOST = "lost"
ERROR = "error"
# A reservation its creator never confirmed by a listed VM is dropped this long after the
# create's own wait (a crashed creator): well past any insert and any cached listing.
RESERVATION_MARGIN_S = 120.0


class Creator:
    """Creates pool VMs of a GPU class from its template for the zone's region."""

    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        settings: Any,
        pool: FleetView,
        request_id: Callable[..., str],
        metadata: Callable[[Job], dict[str, str]],
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._settings = settings
        self._pool = pool
        self._request_id = request_id
        self._metadata = metadata

    def create(
        self,
        job: Job,
        now: datetime,
        fleet: list[VmStatus],
        avoid_zones: set[str],
        leases: JobLeases,
        gpu_class: GpuClass,
    ) -> tuple[tuple[VmRef, tuple[VmRecord, object]] | None, list[tuple[str, str]]]:
        """((the VM whose create was requested, its lease), what was tried) or (None, tried).

        `fleet` is the class's VMs only: its limits count those."""
        limits = scheduling.PoolLimits(gpu_class.max_vms, gpu_class.max_vms_per_zone)
        zones_with_template = [z for z in gpu_class.zones if gpu_class.template_for(z)]
        tried: list[tuple[str, str]] = []
        suggested: list[str] = []
        refused: set[str] = set(avoid_zones)
        while True:
            zones = scheduling.create_zones(
                zones_with_template,
                fleet,
                self._pool.zones(gpu_class.name),
                limits,
                now,
                suggested=suggested,
                avoid=refused,
            )
            if not zones:
                return None, tried
            zone = zones[0]
            name = scheduling.vm_name(
                self._settings.pool_name_prefix, job.job_id, job.attempt, zone
            )
            outcome = self._try(job, zone, name, now, leases, gpu_class, fleet)
            if isinstance(outcome, tuple):
                tried.append((name, CREATED))
                return outcome, tried
            if isinstance(outcome, CapacityError):
                tried.append((name, outcome.reason))
                until = scheduling.zone_cooldown_until(
                    outcome.reason, now, self._settings.stockout_cooldown_s
                )
                self._pool.note_zone_refused(gpu_class.name, zone, until)
                refused.add(zone)
                avoid_zones.add(zone)
                suggested = [z for z in outcome.zones_available if z not in refused]
                continue
            tried.append((name, outcome))
            if outcome in (ERROR, scheduling.REASON_POOL_FULL):
                return None, tried
            refused.add(zone)  # LOST (another dispatcher holds this name's lease), zone full

    def _try(
        self,
        job: Job,
        zone: str,
        name: str,
        now: datetime,
        leases: JobLeases,
        gpu_class: GpuClass,
        fleet: list[VmStatus],
    ) -> tuple[VmRef, tuple[VmRecord, object]] | CapacityError | str:
        leased = self._lease(job, zone, name, now, leases)
        if isinstance(leased, str):
            return leased
        record, version = leased
        # Only the name's lease holder reserves or releases its slot.
        slot = SlotRequest(
            gpu_class=gpu_class.name,
            name=name,
            zone=zone,
            max_vms=gpu_class.max_vms,
            max_vms_per_zone=gpu_class.max_vms_per_zone,
            listed={s.name: s.zone for s in fleet},
            now=now,
            stale_before=now
            - timedelta(seconds=self._settings.create_wait_s + RESERVATION_MARGIN_S),
        )
        try:
            full = self._store.reserve_slot(slot)
        except Exception:
            logger.exception("reserving a slot failed", extra={"job_id": job.job_id, "vm": name})
            self._release(leases, record, version, ERROR)
            return ERROR
        if full is not None:
            logger.info("create refused: %s", full, extra={"job_id": job.job_id, "vm": name})
            self._release(leases, record, version, full)
            return full
        label_key, _, label_value = self._settings.pool_label.partition("=")
        # Each lease write has its own expiry: a retried submit (a new lease) sends a new
        # request, which the name then makes idempotent (the instance exists: 409).
        assert record.lease is not None
        stamp = record.lease.expires_at.isoformat()
        template = gpu_class.template_for(zone)
        assert template is not None  # create_zones had only zones with a template
        labels = {
            label_key.strip(): label_value.strip(),
            CREATED_KEY: CREATED_VALUE,
            gpu_classes.CLASS_LABEL: gpu_class.name,
        }
        # The label is what the dispatcher sees; the attribute what the VM's worker can read.
        metadata = {**self._metadata(job), gpu_classes.CLASS_METADATA_KEY: gpu_class.name}
        operation: str | None  # None: the VM exists and is booting; nothing was sent
        try:
            operation = self._fleet.create(
                zone,
                name,
                template,
                labels,
                metadata,
                self._request_id(job.job_id, job.attempt, name, f"create@{stamp}"),
            )
        except CapacityError as exc:
            self._release_slot(gpu_class, name)
            self._release(leases, record, version, exc.reason)
            logger.warning(
                "create refused: %s",
                exc.reason,
                extra={"job_id": job.job_id, "vm": name, "zones_available": exc.zones_available},
            )
            return exc
        except PreconditionFailed:
            # The name exists: an earlier try of this job attempt created it (the name and the
            # lease we hold are this attempt's). Booting:
            # nothing to do; stopped (that try was undone): start it again.
            try:
                operation = self._start_existing(job, zone, name, stamp)
            except Exception:
                logger.exception("restart failed", extra={"job_id": job.job_id, "vm": name})
                self._release(leases, record, version, ERROR)
                return ERROR
        except Exception:
            logger.exception("create failed", extra={"job_id": job.job_id, "vm": name})
            self._release_slot(gpu_class, name)
            self._release(leases, record, version, ERROR)
            return ERROR
        self._pool.note_zone_capacity(gpu_class.name, zone, now)
        self._pool.note_created(
            VmStatus(name=name, zone=zone, status="PROVISIONING", labels=labels)
        )
        logger.info("create requested", extra={"job_id": job.job_id, "vm": name, "zone": zone})
        return VmRef(name=name, zone=zone, operation=operation), (record, version)

    def _start_existing(self, job: Job, zone: str, name: str, stamp: str) -> str | None:
        status = self._fleet.get(zone, name)
        if status.status != "TERMINATED":
            return None
        return self._fleet.start(
            zone, name, self._request_id(job.job_id, job.attempt, name, f"start@{stamp}")
        )

    def _lease(
        self, job: Job, zone: str, name: str, now: datetime, leases: JobLeases
    ) -> tuple[VmRecord, object] | str:
        """The lease committed with the job `starting` on the VM to be (one commit), or LOST."""
        record, version = leases.read(name)  # JobExists, JobGone: up to the placement
        if record is not None and record.is_leased(now):
            lease = record.lease
            if lease is None or lease.job_id != job.job_id:
                return LOST
        expires_at = now + timedelta(seconds=self._settings.lease_ttl_s)
        leased = (record or VmRecord(name=name, zone=zone)).model_copy(
            update={"zone": zone, "lease": Lease(job_id=job.job_id, expires_at=expires_at)}
        )
        try:
            new_version = leases.lease(leased, version, VmRef(name=name, zone=zone))
        except (JobExists, JobGone):
            raise
        except PreconditionFailed:
            return LOST
        except Exception:
            logger.exception("leasing failed", extra={"job_id": job.job_id, "vm": name})
            return ERROR
        self._pool.note_record(leased)
        return leased, new_version

    def _release_slot(self, gpu_class: GpuClass, name: str) -> None:
        try:
            self._store.release_slot(gpu_class.name, name)
        except Exception:  # the reservation ages out (RESERVATION_MARGIN_S)
            logger.exception("releasing a slot failed", extra={"vm": name})

    def _release(self, leases: JobLeases, record: VmRecord, version: object, why: str) -> None:
        """The lease given back and the job back to queued, in one commit."""
        released = record.model_copy(update={"lease": None})
        try:
            leases.give_back(released, version, why)
        except Exception:  # the lease expires; the reaper requeues a job whose VM never booted
            logger.exception("giving the lease back failed", extra={"vm": record.name})
            return
        self._pool.note_record(released)
