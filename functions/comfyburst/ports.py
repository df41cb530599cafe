"""The ports the domain talks through. Adapters implement them over Google Cloud clients;
in-memory fakes (tests/fakes.py) implement them for unit tests of domain code."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from comfyburst.domain.environments import Environment
from comfyburst.schema import Job, VmRecord, WarmIdle
from comfyburst.states import JobState

# A function given the current job, returning the job to store (or None to leave it as it is).
# It runs inside the store's transaction and may run more than once if the transaction retries,
# so it must be pure.
JobMutation = Callable[[Job], Job | None]


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class LeaseWrite:
    """A VM document written in a commit, under its precondition."""

    record: VmRecord
    version: object | None  # the version read; None: create-if-absent


@dataclass(frozen=True)
class JobWrite:
    """The job document written in a commit, under its precondition."""

    job: Job
    version: object | None  # the version read; None: create it (and `idempotency/{key}`)


@dataclass(frozen=True)
class LeaseRead:
    """A VM document and a job document read together (one round trip), with versions."""

    record: VmRecord | None
    record_version: object | None
    job: Job | None
    job_version: object | None


@dataclass(frozen=True)
class SlotRequest:
    """A creator asks for a slot of its GPU class for VM `name` in `zone` (domain rule:
    scheduling.reserve_slot); `listed` is the class's VMs as Compute lists them (name -> zone)."""

    gpu_class: str
    name: str
    zone: str
    max_vms: int
    max_vms_per_zone: int
    listed: Mapping[str, str]
    now: datetime
    stale_before: datetime


class JobStore(Protocol):
    """Job, VM-lease and idempotency documents (Firestore)."""

    def create_job(self, job: Job) -> tuple[Job, bool]:
        """Create the job (and `idempotency/{key}` when it has a key) atomically.

        Returns (job, True) when created, or (the job created earlier with that key, False).
        """
        ...

    def get_job(self, job_id: str) -> Job | None: ...

    def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs of `job_ids` that exist, read in one round trip (any order)."""
        ...

    def read_job(self, job_id: str) -> tuple[Job | None, object | None]:
        """The job and an opaque version token for a conditional write (`commit`)."""
        ...

    def update_job(self, job_id: str, mutate: JobMutation) -> Job:
        """Read the job, apply `mutate`, write the result, all in one transaction.

        Raises NotFound for an unknown job. Returns the job as stored afterwards.
        """
        ...

    def patch_job(self, job_id: str, fields: dict[str, object]) -> None:
        """Merge a few fields without a transaction (progress, heartbeat). Never the state."""
        ...

    def list_jobs(
        self, states: Iterable[JobState], limit: int | None = 500, gpu_class: str | None = None
    ) -> list[Job]:
        """Jobs in any of the given states, oldest first; `limit=None`: all of them (paged);
        `gpu_class`: only jobs that recorded that class."""
        ...

    def list_unpublished_results(self, limit: int = 100) -> list[Job]:
        """Terminal jobs whose result message was not published yet (`result_published_at`
        null), so the reaper can publish their stored result again."""
        ...

    def get_vm(self, name: str) -> tuple[VmRecord | None, object | None]:
        """The VM document and an opaque version token for a conditional write."""
        ...

    def list_vms(self) -> list[VmRecord]: ...

    def put_vm(self, vm: VmRecord, expected_version: object | None) -> object:
        """Write the VM document only if unchanged since `expected_version` was read.

        `expected_version=None` means create-if-absent. Raises PreconditionFailed when the
        document changed or already exists. Returns the new version.
        """
        ...

    def add_warm_idle(self, record: WarmIdle) -> None:
        """Record a warm stretch of a VM (`{vms}_warm_idle`; written again, the same)."""
        ...

    def reserve_slot(self, request: SlotRequest) -> str | None:
        """Reserve the VM's slot in its class's reservation document, in one transaction, so
        concurrent creators never exceed the class's limits. None: reserved (or already
        this name's); else why not (a limit reason). Only the create path calls this."""
        ...

    def release_slot(self, gpu_class: str, name: str) -> None:
        """Drop the VM's reservation (its create failed, or it was deleted); absent is fine."""
        ...

    def read_for_lease(self, vm_name: str, job_id: str) -> LeaseRead:
        """`vms/{vm_name}` and `jobs/{job_id}` with their versions, in one read."""
        ...

    def commit(
        self, vms: Sequence[LeaseWrite], job: JobWrite | None = None
    ) -> tuple[list[object], object | None]:
        """Write VM documents and the job in ONE atomic commit, each under its precondition.

        Returns the new versions (of `vms`, in order; of the job). Nothing is written when a
        precondition fails: JobExists when the job to create is stored already (with it),
        PreconditionFailed for any other.
        """
        ...


class EnvironmentStore(Protocol):
    """Environment documents and who asked for which (Firestore)."""

    def create(self, env: Environment, caller: str | None) -> tuple[Environment, bool]:
        """Store `env` unless its id is stored already, and record that `caller` asked for
        it, in one transaction. Returns (the stored document, True when this call made it)."""
        ...

    def get(self, environment_id: str) -> Environment | None: ...

    def list_for(self, caller: str | None, limit: int) -> list[Environment]:
        """The environments `caller` asked for, most recently asked first."""
        ...

    def asked_by(self, caller: str | None, environment_id: str) -> bool:
        """Whether `caller` has asked for this environment before (its access record)."""
        ...

    def count_for(self, caller: str | None) -> int:
        """How many environments `caller` has asked for (its access records)."""
        ...

    def update(
        self, environment_id: str, mutate: Callable[[Environment], Environment | None]
    ) -> Environment | None:
        """Apply `mutate` in a transaction (None from it: no write); None if not stored."""
        ...


class BlobStore(Protocol):
    """Objects in Cloud Storage buckets."""

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
    ) -> int:
        """Write an object; `if_generation_match=0` means only if absent (PreconditionFailed
        otherwise). Returns the new generation."""
        ...

    def read(self, bucket: str, name: str) -> bytes | None: ...

    def generation(self, bucket: str, name: str) -> int | None: ...

    def list(self, bucket: str, prefix: str) -> list[str]: ...

    def delete(self, bucket: str, name: str) -> None: ...

    def upload_file(self, bucket: str, name: str, path: str, content_type: str) -> int: ...

    def download_file(self, bucket: str, name: str, path: str) -> bool: ...


class UrlSigner(Protocol):
    def sign_get(self, bucket: str, name: str, ttl_s: int) -> str:
        """A V4 signed GET URL valid for ttl_s seconds."""
        ...


class Publisher(Protocol):
    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        """Publish to the results topic and wait until the server accepted it."""
        ...


@dataclass(frozen=True)
class VmStatus:
    """What the fleet says of one VM."""

    name: str
    zone: str
    status: str  # PROVISIONING, STAGING, RUNNING, STOPPING, SUSPENDED, TERMINATED, ...
    metadata: dict[str, str] = field(default_factory=dict)
    fingerprint: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    last_start_at: datetime | None = None  # Compute's lastStartTimestamp, when it has one


class Fleet(Protocol):
    """Compute Engine instances of the GPU pool."""

    def list(self) -> list[VmStatus]:
        """Every VM of the pool (selected by its label), in every zone."""
        ...

    def get(self, zone: str, name: str) -> VmStatus: ...

    def start(self, zone: str, name: str, request_id: str) -> str:
        """Request a start; returns the operation name. Raises CapacityError (stockout,
        quota, not ready) so the caller can try another VM."""
        ...

    def stop(self, zone: str, name: str, request_id: str) -> str: ...

    def set_metadata(
        self, zone: str, name: str, items: dict[str, str], fingerprint: str | None, request_id: str
    ) -> str:
        """Replace the given keys (others kept). Raises PreconditionFailed on a stale
        fingerprint."""
        ...

    def operation_error(self, zone: str, operation: str) -> str | None:
        """The error code of a finished, failed operation; None while pending or when it
        succeeded."""
        ...

    def create(
        self,
        zone: str,
        name: str,
        template: str,
        labels: dict[str, str],
        metadata: dict[str, str],
        request_id: str,
    ) -> str:
        """instances.insert from `template`; returns the operation name. Raises CapacityError
        (with the zones Compute named, if any) when the zone refuses, PreconditionFailed when
        the name is taken."""
        ...

    def delete(self, zone: str, name: str, request_id: str) -> str:
        """Delete a VM and its disk; raises NotFound when it does not exist."""
        ...
