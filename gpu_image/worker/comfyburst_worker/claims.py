"""Claiming jobs and keeping this VM's lease (`vms/{name}`), with the store's preconditions."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from comfyburst.domain import fair_share
from comfyburst.domain.jobs import transition
from comfyburst.domain.reaper import DRAIN_LEASE_PREFIX
from comfyburst.domain.scheduling import DELETE_LEASE_PREFIX
from comfyburst.errors import PreconditionFailed
from comfyburst.ports import Clock, JobStore, JobWrite, LeaseWrite
from comfyburst.schema import Job, Lease, VmRecord, VmRef
from comfyburst.states import JobState

log = logging.getLogger(__name__)

ClaimRule = Callable[[Job], "Job | None"]

_PUT_TRIES = 5


def claim_starting(store: JobStore, job_id: str, vm: VmRef, clock: Clock) -> Job | None:
    """`starting → running`, only if the dispatcher gave the job to this VM."""

    def mutate(job: Job) -> Job | None:
        if job.state is not JobState.STARTING or job.vm is None or job.vm.name != vm.name:
            return None
        if job.cancel_requested:
            return None
        return transition(job, JobState.RUNNING, clock.now(), vm=job.vm)

    return _claimed(store.update_job(job_id, mutate), vm)


@dataclass(frozen=True)
class BootLease:
    """What this VM's lease says of its boot: the job it booted for, or whether it was
    started for no job (the live drain marker `drain:{vm}` the reaper leases a VM it starts
    for a warm schedule; a restarted agent of a draining VM reads the same marker)."""

    job_id: str | None = None
    drain_marker: bool = False


def boot_lease(store: JobStore, vm: VmRef, now: datetime) -> BootLease:
    """The job this VM booted for: the one its lease (`vms/{name}`) names while live.

    The dispatcher commits that lease together with the job `starting` on this VM, before it
    requests the start, so no per-job metadata is needed; `claim_starting` checks the rest.
    A drain or delete marker, or no live lease (or an unreadable one): no job (the agent drains).
    """
    try:
        record, _ = store.get_vm(vm.name)
    except Exception as exc:  # the drain path lists starting jobs naming this VM anyway
        log.warning("reading this VM's lease failed: %s", exc)
        return BootLease()
    lease = record.lease if record is not None else None
    if lease is None or lease.expires_at <= now:
        return BootLease()
    if lease.job_id == f"{DRAIN_LEASE_PREFIX}{vm.name}":
        return BootLease(drain_marker=True)
    if lease.job_id.startswith((DRAIN_LEASE_PREFIX, DELETE_LEASE_PREFIX)):
        return BootLease()
    return BootLease(job_id=lease.job_id)


def queued_claim(vm: VmRef, clock: Clock, vm_class: VmClass | None = None) -> ClaimRule:
    """`queued → running` on this VM (the draining worker taking the next job), only a job
    of this VM's GPU class, decided on the job as read for the claim (its class may have
    changed since it was listed). None: not claimable."""

    def mutate(job: Job) -> Job | None:
        if job.state is not JobState.QUEUED or job.cancel_requested:
            return None
        if vm_class is not None and not vm_class.takes(job):
            return None
        return transition(job, JobState.RUNNING, clock.now(), vm=vm, queued_reason=None)

    return mutate


def _claimed(job: Job, vm: VmRef) -> Job | None:
    mine = job.state is JobState.RUNNING and job.vm is not None and job.vm.name == vm.name
    return job if mine else None


# Draining workers that look at the queue at the same moment would all race for its oldest
# job: one wins, the others' claim transactions conflict (seconds each on the emulator, and a
# hot document in Firestore). So each VM takes the oldest few in its own order.
SPREAD_WINDOW = 8


@dataclass(frozen=True)
class VmClass:
    """This VM's GPU class and the deployment's default (the class of jobs that name none)."""

    name: str
    default: str

    def takes(self, job: Job) -> bool:
        """Whether a job of this class may run here: a job never runs on another class."""
        return (job.gpu_class or self.default) == self.name


def rank_queued(
    jobs: Iterable[Job],
    models_cached: set[str],
    vm_name: str = "",
    spread: int = SPREAD_WINDOW,
    vm_class: VmClass | None = None,
    running: Mapping[str | None, int] | None = None,
    max_running: fair_share.MaxRunning = fair_share.no_limit,
    dispatch_order: fair_share.DispatchOrder = fair_share.DispatchOrder.FAIR,
    served: fair_share.Served | None = None,
) -> list[Job]:
    """Queued jobs of this VM's class (`vm_class`; None: every job) in the dispatcher's fair
    share order between callers (domain/fair_share.py: `running` counts each caller's jobs
    starting or running, `served` says when each was last served in the class; one at its
    `max_running` is left out; `dispatch_order` fifo: the oldest first, whoever's). Each
    caller's own jobs: those whose models are all on this VM first, then oldest first; within
    each group the oldest `spread` in an order of their own per VM (`vm_name`)."""
    mine = sorted(
        (j for j in jobs if vm_class is None or vm_class.takes(j)),
        key=lambda j: (j.created_at, j.job_id),
    )
    own: dict[str | None, list[Job]] = {}
    for job in mine:
        own.setdefault(job.caller, []).append(job)
    preferred = {
        caller: iter(_preferred(jobs, models_cached, vm_name, spread))
        for caller, jobs in own.items()
    }
    # Each caller's k-th oldest job's place in the queue holds its k-th preferred job: the
    # rule's ties still go by age, and each caller's jobs come in this VM's preference.
    slotted = [next(preferred[job.caller]) for job in mine]
    return fair_share.order(slotted, running or {}, max_running, dispatch_order, served)


def _preferred(jobs: list[Job], models_cached: set[str], vm_name: str, spread: int) -> list[Job]:
    """One caller's jobs (oldest first): models on this VM first, each group's head spread."""
    groups: dict[bool, list[Job]] = {True: [], False: []}
    for job in jobs:
        groups[set(job.request.models) <= models_cached].append(job)
    ranked: list[Job] = []
    for group in (groups[True], groups[False]):
        head = sorted(group[:spread], key=lambda j: _spread_key(vm_name, j.job_id))
        ranked += head + group[spread:]
    return ranked


# Jobs starting or running read to count each caller's share. Each holds a VM, so the pool's
# VMs (every class's max_vms together) bound them; a pool past this many counts only these.
RUNNING_WINDOW = 1000


def share_of(
    store: JobStore, queued: Iterable[Job], running_limits: Mapping[str, int]
) -> tuple[dict[str | None, int], fair_share.MaxRunning] | None:
    """What the fair share rule needs for these queued jobs: each caller's jobs starting or
    running (one query, made only when callers compete or one has a `max_running`) and the
    callers' limits (DeploymentConfig.running_limits). None: they could not be counted and a
    limit applies, so nothing is claimed this time (a limit is never passed for a failed read)."""
    max_running = fair_share.from_table(running_limits)
    callers = {job.caller for job in queued}
    limited = any(max_running(caller) is not None for caller in callers)
    if len(callers) < 2 and not limited:
        return {}, max_running
    try:
        live = store.list_jobs([JobState.STARTING, JobState.RUNNING], limit=RUNNING_WINDOW)
    except Exception as exc:
        log.warning("counting running jobs failed: %s", exc)
        return None if limited else ({}, max_running)
    return fair_share.running_by_caller(live), max_running


# Callers whose oldest queued job a draining VM looks up past its listing (one one-document
# query each, only when the listing was full): with more callers waiting, those later in name
# order are left to the reaper's pass, which sees every live job.
HEAD_CALLERS = 16


def queued_heads(store: JobStore, gpu_class: str) -> list[Job]:
    """Each caller's oldest queued job of the class (FirestoreJobStore.queued_heads), so fair
    share sees a caller whose jobs all queued after a long backlog; [] if the store has no
    such query or it fails (the listing alone is ranked then)."""
    scan = getattr(store, "queued_heads", None)
    if scan is None:
        return []
    try:
        return list(scan(gpu_class, HEAD_CALLERS))
    except Exception as exc:
        log.warning("looking up each caller's oldest queued job failed: %s", exc)
        return []


def _spread_key(vm_name: str, job_id: str) -> bytes:
    return hashlib.blake2b(f"{vm_name}/{job_id}".encode(), digest_size=8).digest()


class Taken(Enum):
    TAKEN = "taken"


TAKEN = Taken.TAKEN  # `LeaseKeeper.take`: this VM's lease is another job's


class LeaseKeeper:
    """Every write to this VM's document goes through here, re-read on a lost race."""

    def __init__(self, store: JobStore, vm: VmRef, clock: Clock, ttl_s: int) -> None:
        self.store, self.vm, self.clock, self.ttl_s = store, vm, clock, ttl_s
        # The document as this keeper last wrote it: the next write tries it first (one round
        # trip instead of two); the precondition catches any change made by someone else.
        self._written: tuple[VmRecord, object] | None = None

    def _update(self, change: Callable[[VmRecord], VmRecord | None]) -> VmRecord | None:
        for _ in range(_PUT_TRIES):
            cached, self._written = self._written, None
            record: VmRecord | None
            if cached is not None:
                record, version = cached
            else:
                record, version = self.store.get_vm(self.vm.name)
            base = record or VmRecord(name=self.vm.name, zone=self.vm.zone)
            updated = change(base.model_copy(deep=True))
            if updated is None:
                if cached is not None:
                    continue  # decided on what we wrote last; decide again on what is stored
                return None
            try:
                new_version = self.store.put_vm(updated, version if record is not None else None)
            except PreconditionFailed:
                continue
            self._written = (updated, new_version)
            return updated
        log.warning("vms/%s kept changing; gave up this write", self.vm.name)
        return None

    def _lease(self, job_id: str, expires_at: datetime | None) -> Lease:
        now = self.clock.now()
        return Lease(job_id=job_id, expires_at=expires_at or now + timedelta(seconds=self.ttl_s))

    def _leased(self, rec: VmRecord, job_id: str, expires_at: datetime | None = None) -> VmRecord:
        lease = self._lease(job_id, expires_at)
        return rec.model_copy(update={"lease": lease, "last_seen": self.clock.now()})

    def renew(self, job_id: str) -> bool:
        """Push the lease's expiry forward while it is this job's."""

        def change(rec: VmRecord) -> VmRecord | None:
            if rec.lease is None or rec.lease.job_id != job_id:
                return None
            return self._leased(rec, job_id)

        return self._update(change) is not None

    def repoint(
        self, from_job: str | None, to_job: str, expires_at: datetime | None = None
    ) -> bool:
        """Lease this VM to `to_job` (until `expires_at`, default the lease TTL from now), if
        the lease is free, expired, or `from_job`'s."""

        def change(rec: VmRecord) -> VmRecord | None:
            lease = rec.lease
            live = lease is not None and rec.is_leased(self.clock.now())
            if live and lease is not None and lease.job_id not in (from_job, to_job):
                return None
            return self._leased(rec, to_job, expires_at)

        return self._update(change) is not None

    def take(self, job_id: str, from_job: str | None, claim: ClaimRule) -> Job | Taken | None:
        """Lease this VM to `job_id` and claim the job in ONE commit, each document under the
        precondition of the version just read (`read_for_lease`: one round trip): no lock is
        held, so draining VMs racing for a job lose at once and try another, and the lease
        never points at a job this VM did not get. None: the job was not claimable or another
        claimant won (nothing written); `TAKEN`: the VM's lease is someone else's (stop)."""
        read = self.store.read_for_lease(self.vm.name, job_id)
        record = read.record or VmRecord(name=self.vm.name, zone=self.vm.zone)
        lease = record.lease if record.is_leased(self.clock.now()) else None
        if lease is not None and lease.job_id not in (from_job, job_id):
            return TAKEN
        claimed = claim(read.job) if read.job is not None else None
        if claimed is None:
            return None
        leased = self._leased(record, job_id)
        self._written = None
        try:
            versions, _ = self.store.commit(
                [LeaseWrite(leased, read.record_version)], JobWrite(claimed, read.job_version)
            )
        except PreconditionFailed:
            return None  # the job or this VM's document changed since the read: decide anew
        self._written = (leased, versions[0])
        return claimed

    def release(self, job_ids: Iterable[str | None]) -> bool:
        """Drop the lease if it names one of these jobs (or has expired)."""
        held = {j for j in job_ids if j}

        def change(rec: VmRecord) -> VmRecord | None:
            lease = rec.lease
            if lease is None:
                return None
            if lease.job_id not in held and rec.is_leased(self.clock.now()):
                return None
            return rec.model_copy(update={"lease": None, "last_seen": self.clock.now()})

        return self._update(change) is not None

    def add_models(self, keys: Iterable[str]) -> None:
        """Record models now on this VM's disk, for the scheduler's preference."""
        wanted = list(keys)

        def change(rec: VmRecord) -> VmRecord | None:
            merged = list(dict.fromkeys([*rec.models_cached, *wanted]))
            if merged == rec.models_cached:
                return None
            return rec.model_copy(update={"models_cached": merged})

        self._update(change)

    def set_environments(self, environment_ids: Iterable[str]) -> None:
        """Record the environment layers now on this VM's disk (placement prefers them)."""
        ids = list(environment_ids)

        def change(rec: VmRecord) -> VmRecord | None:
            if rec.environments == ids:
                return None
            return rec.model_copy(update={"environments": ids})

        self._update(change)

    def models_cached(self) -> set[str]:
        record, _ = self.store.get_vm(self.vm.name)
        return set(record.models_cached) if record else set()
