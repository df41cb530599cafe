"""The job's side of a placement: every lease is committed together with the job document.

The commit that leases a VM also writes the job `starting` on it (on the submit path it creates
the job, with its idempotency document); the commit that gives a refused VM's lease back writes
the job back `queued`. One Firestore commit each, under the preconditions of both documents
(the VM document's read version, the job's), so a lease never names a job that does not exist,
two dispatchers never both hold a live lease, and a job that left `queued` meanwhile (claimed,
cancelled) is never moved. The worker learns its boot job from this lease (claims.boot_lease).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from comfyburst.domain.jobs import transition
from comfyburst.errors import JobExists, PreconditionFailed
from comfyburst.ports import JobStore, JobWrite, LeaseWrite
from comfyburst.schema import Job, VmRecord, VmRef
from comfyburst.services._leases import release_lease
from comfyburst.states import JobState

logger = logging.getLogger(__name__)


class JobGone(Exception):
    """The stored job is not queued at its attempt any more: not ours to place. `job`: as
    stored."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.job_id} is {job.state.value}")
        self.job = job


class JobLeases:
    """Lease commits for one placement of one job (`create`: the job is not stored yet)."""

    def __init__(
        self,
        store: JobStore,
        job: Job,
        now: datetime,
        *,
        create: bool,
        before_commit: Callable[[], object] | None = None,
    ) -> None:
        """`before_commit` runs once, before the commit that creates the job (the submit waits
        there for its request to be stored: a job never exists without its request)."""
        self._store = store
        self.job = job  # as stored (or to be created)
        self._queued = job  # the queued form a refused start writes back
        self._version: object | None = None  # the job document's, once read or written
        self._create = create
        self._before = before_commit
        self._before_failed = False
        self._now = now

    def read(self, vm_name: str) -> tuple[VmRecord | None, object | None]:
        """The VM document and its version, read with the job (one round trip).

        Raises JobExists (the job is stored already: a retried submit) or JobGone.
        """
        got = self._store.read_for_lease(vm_name, self.job.job_id)
        if self._create:
            if got.job is not None:
                raise JobExists(got.job)
        else:
            self._adopt(got.job, got.job_version)
        return got.record, got.record_version

    def lease(self, leased: VmRecord, version: object | None, vm: VmRef) -> object:
        """Commit the lease and the job `starting` on `vm`; the lease's new version.

        PreconditionFailed: the VM (or the job, now re-read) changed; nothing was written.
        """
        starting = transition(
            self._queued, JobState.STARTING, self._now, vm=vm, dispatched_at=self._now
        ).model_copy(update={"queued_reason": None})
        try:
            return self._commit([LeaseWrite(leased, version)], starting)[0]
        except JobExists:
            raise
        except PreconditionFailed:
            if not self._create:  # was it the job? then JobGone, else the VM was lost
                got = self._store.read_for_lease(leased.name, self.job.job_id)
                self._adopt(got.job, got.job_version)
            raise

    def give_back(self, released: VmRecord, version: object, reason: str) -> None:
        """The start was refused: commit the lease's release and the job back to `queued`."""
        queued = self._queued.model_copy(update={"queued_reason": reason})
        try:
            self._commit([LeaseWrite(released, version)], queued)
            return
        except PreconditionFailed:
            pass
        # A cancel (or the reaper) changed the job meanwhile: each document on its own, and
        # only while it is still this placement's.
        vm_name, job_id = released.name, self.job.job_id
        state_changed_at = self._queued.state_changed_at

        def back(current: Job) -> Job | None:
            vm = current.vm
            if current.state is not JobState.STARTING or vm is None or vm.name != vm_name:
                return None
            if current.attempt != self._queued.attempt:
                return None
            return transition(
                current, JobState.QUEUED, self._now, vm=None, dispatched_at=None
            ).model_copy(update={"queued_reason": reason, "state_changed_at": state_changed_at})

        self.job = self._store.update_job(job_id, back)
        release_lease(self._store, vm_name, job_id)
        self._version = None  # the next read takes the stored version

    def settle(self, reason: str) -> Job:
        """No VM took the job: it is stored `queued` with the reason (created, on the submit
        path). Returns the job as stored."""
        if self._create:
            self._commit([], self._queued.model_copy(update={"queued_reason": reason}))
            return self.job
        if self.job.state is not JobState.QUEUED or self.job.queued_reason == reason:
            return self.job

        def note(current: Job) -> Job | None:
            if current.state is not JobState.QUEUED or current.queued_reason == reason:
                return None
            return current.model_copy(update={"queued_reason": reason})

        self.job = self._store.update_job(self.job.job_id, note)
        return self.job

    def _adopt(self, job: Job | None, version: object | None) -> None:
        if job is None:
            raise JobGone(self.job)  # deleted (its TTL): nothing to place
        if job.state is not JobState.QUEUED or job.attempt != self._queued.attempt:
            raise JobGone(job)
        self.job = self._queued = job
        self._version = version

    def _commit(self, vms: list[LeaseWrite], job: Job) -> list[object]:
        if self._create and self._before is not None:
            try:
                self._before()
            except BaseException:
                # No commit may create the job without its request, not even a later one.
                self._before_failed = True
                raise
            self._before = None
        if self._before_failed:
            raise PreconditionFailed(f"job {job.job_id}: its request was not stored")
        if not self._create and self._version is None:
            raise PreconditionFailed(f"job {job.job_id}: no version read to write under")
        versions, job_version = self._store.commit(
            vms, JobWrite(job, None if self._create else self._version)
        )
        self.job, self._version, self._create = job, job_version, False
        return versions
