"""In-memory fakes of the ports, for unit tests of domain code only."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count

from comfyburst.domain import scheduling
from comfyburst.errors import CapacityError, JobExists, NotFound, PreconditionFailed
from comfyburst.ports import JobMutation, JobWrite, LeaseRead, LeaseWrite, SlotRequest, VmStatus
from comfyburst.schema import Job, VmRecord, WarmIdle
from comfyburst.states import JobState


class FixedClock:
    """A clock that moves only when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> datetime:
        self.current += timedelta(seconds=seconds)
        return self.current


class InMemoryJobStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.idempotency: dict[str, str] = {}
        self.vms: dict[str, tuple[VmRecord, int]] = {}
        self._versions = count(1)
        self.job_versions: dict[str, int] = {}  # bumped on each job write (commit preconditions)
        self.slots: dict[str, dict[str, scheduling.Reservation]] = {}  # class -> reservations
        self.warm_idle: dict[tuple[str, datetime], WarmIdle] = {}  # (vm, started_at) -> stretch

    def create_job(self, job: Job) -> tuple[Job, bool]:
        with self._lock:
            key = job.idempotency_key
            if key is not None and key in self.idempotency:
                return self.jobs[self.idempotency[key]], False
            if job.job_id in self.jobs:
                raise PreconditionFailed(f"job {job.job_id} exists")
            if key is not None:
                self.idempotency[key] = job.job_id
            self.jobs[job.job_id] = job.model_copy(deep=True)
            self.job_versions[job.job_id] = next(self._versions)
            return job, True

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            job = self.jobs.get(job_id)
            return job.model_copy(deep=True) if job else None

    def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        return [job for job_id in dict.fromkeys(job_ids) if (job := self.get_job(job_id))]

    def read_job(self, job_id: str) -> tuple[Job | None, object | None]:
        with self._lock:
            job = self.get_job(job_id)
            if job is None:
                return None, None
            return job, self.job_versions.setdefault(job_id, next(self._versions))

    def update_job(self, job_id: str, mutate: JobMutation) -> Job:
        with self._lock:
            current = self.jobs.get(job_id)
            if current is None:
                raise NotFound(f"job {job_id} not found")
            updated = mutate(current.model_copy(deep=True))
            if updated is None:
                return current.model_copy(deep=True)
            self.jobs[job_id] = updated.model_copy(deep=True)
            self.job_versions[job_id] = next(self._versions)
            return updated

    def patch_job(self, job_id: str, fields: dict[str, object]) -> None:
        with self._lock:
            current = self.jobs.get(job_id)
            if current is None:
                raise NotFound(f"job {job_id} not found")
            if "state" in fields:
                raise ValueError("patch_job never changes the state")
            data = current.model_dump()
            for path, value in fields.items():
                target = data
                *parents, leaf = path.split(".")
                for part in parents:
                    target = target[part]
                target[leaf] = value
            self.jobs[job_id] = Job.model_validate(data)
            self.job_versions[job_id] = next(self._versions)

    def list_jobs(
        self, states: Iterable[JobState], limit: int | None = 500, gpu_class: str | None = None
    ) -> list[Job]:
        wanted = set(states)
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.state in wanted]
        if gpu_class is not None:
            jobs = [j for j in jobs if j.gpu_class == gpu_class]
        jobs.sort(key=lambda j: j.created_at)
        return [j.model_copy(deep=True) for j in jobs[:limit]]

    def list_unpublished_results(self, limit: int = 100) -> list[Job]:
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.state.terminal and not j.result_published_at]
        jobs.sort(key=lambda j: j.finished_at or j.created_at)
        return [j.model_copy(deep=True) for j in jobs[:limit]]

    def get_vm(self, name: str) -> tuple[VmRecord | None, object | None]:
        with self._lock:
            if name not in self.vms:
                return None, None
            record, version = self.vms[name]
            return record.model_copy(deep=True), version

    def list_vms(self) -> list[VmRecord]:
        with self._lock:
            return [r.model_copy(deep=True) for r, _ in self.vms.values()]

    def reserve_slot(self, request: SlotRequest) -> str | None:
        with self._lock:
            kept, refused = scheduling.reserve_for(self.slots.get(request.gpu_class, {}), request)
            self.slots[request.gpu_class] = kept
            return refused

    def release_slot(self, gpu_class: str, name: str) -> None:
        with self._lock:
            self.slots.get(gpu_class, {}).pop(name, None)

    def add_warm_idle(self, record: WarmIdle) -> None:
        with self._lock:
            self.warm_idle[(record.vm_name, record.started_at)] = record.model_copy()

    def put_vm(self, vm: VmRecord, expected_version: object | None) -> object:
        with self._lock:
            existing = self.vms.get(vm.name)
            if expected_version is None and existing is not None:
                raise PreconditionFailed(f"vm {vm.name} exists")
            if expected_version is not None and (
                existing is None or existing[1] != expected_version
            ):
                raise PreconditionFailed(f"vm {vm.name} changed")
            version = next(self._versions)
            self.vms[vm.name] = (vm.model_copy(deep=True), version)
            return version

    def read_for_lease(self, vm_name: str, job_id: str) -> LeaseRead:
        with self._lock:
            record, version = self.get_vm(vm_name)
            job = self.get_job(job_id)
            if job is None:
                return LeaseRead(record, version, None, None)
            # A job a test put into `jobs` directly has no version yet: give it one.
            job_version = self.job_versions.setdefault(job_id, next(self._versions))
            return LeaseRead(record, version, job, job_version)

    def commit(
        self, vms: Sequence[LeaseWrite], job: JobWrite | None = None
    ) -> tuple[list[object], object | None]:
        with self._lock:  # every precondition first, then every write: all or nothing
            for write in vms:
                existing = self.vms.get(write.record.name)
                if (existing is None) != (write.version is None) or (
                    existing is not None and existing[1] != write.version
                ):
                    raise PreconditionFailed(f"vm {write.record.name} changed")
            if job is not None:
                stored = self.jobs.get(job.job.job_id)
                key = job.job.idempotency_key
                if job.version is None and (stored or (key and key in self.idempotency)):
                    earlier = self.jobs.get(self.idempotency.get(key or "", ""), stored)
                    raise JobExists(earlier.model_copy(deep=True) if earlier else None)
                if job.version is not None and self.job_versions.get(job.job.job_id) != job.version:
                    raise PreconditionFailed(f"job {job.job.job_id} changed")
            versions: list[object] = []
            for write in vms:
                versions.append(next(self._versions))
                self.vms[write.record.name] = (write.record.model_copy(deep=True), versions[-1])
            job_version: object | None = None
            if job is not None:
                if job.version is None and job.job.idempotency_key is not None:
                    self.idempotency[job.job.idempotency_key] = job.job.job_id
                self.jobs[job.job.job_id] = job.job.model_copy(deep=True)
                job_version = self.job_versions[job.job.job_id] = next(self._versions)
            return versions, job_version


class InMemoryBlobStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.objects: dict[tuple[str, str], tuple[bytes, str, int]] = {}
        self._generations = count(1)

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
    ) -> int:
        with self._lock:
            existing = self.objects.get((bucket, name))
            if if_generation_match is not None:
                current = existing[2] if existing else 0
                if current != if_generation_match:
                    raise PreconditionFailed(f"gs://{bucket}/{name} generation mismatch")
            generation = next(self._generations)
            self.objects[(bucket, name)] = (bytes(data), content_type, generation)
            return generation

    def read(self, bucket: str, name: str) -> bytes | None:
        with self._lock:
            item = self.objects.get((bucket, name))
            return item[0] if item else None

    def generation(self, bucket: str, name: str) -> int | None:
        with self._lock:
            item = self.objects.get((bucket, name))
            return item[2] if item else None

    def list(self, bucket: str, prefix: str) -> list[str]:
        with self._lock:
            return sorted(n for b, n in self.objects if b == bucket and n.startswith(prefix))

    def delete(self, bucket: str, name: str) -> None:
        with self._lock:
            self.objects.pop((bucket, name), None)

    def upload_file(self, bucket: str, name: str, path: str, content_type: str) -> int:
        with open(path, "rb") as fh:
            return self.write(bucket, name, fh.read(), content_type)

    def download_file(self, bucket: str, name: str, path: str) -> bool:
        data = self.read(bucket, name)
        if data is None:
            return False
        with open(path, "wb") as fh:
            fh.write(data)
        return True


class FakeSigner:
    def sign_get(self, bucket: str, name: str, ttl_s: int) -> str:
        return f"https://signed.invalid/{bucket}/{name}?ttl={ttl_s}"


class InMemoryPublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []
        self.fail_next = 0

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("injected publish failure")
        self.messages.append((data, dict(attributes)))
        return str(len(self.messages))


class FakeFleet:
    """VMs that change state at once; faults are set per VM or per zone."""

    def __init__(self, vms: Iterable[tuple[str, str]]) -> None:
        self._lock = threading.Lock()
        self.vms = {
            name: VmStatus(name=name, zone=zone, status="TERMINATED", fingerprint="f0")
            for name, zone in vms
        }
        self.stockout_zones: set[str] = set()
        self.operation_errors: dict[str, str] = {}  # operation name -> error code, set by tests
        self.calls: list[tuple[str, str]] = []
        self._fingerprints = count(1)

    def list(self) -> list[VmStatus]:
        with self._lock:
            return list(self.vms.values())

    def get(self, zone: str, name: str) -> VmStatus:
        with self._lock:
            return self.vms[name]

    def start(self, zone: str, name: str, request_id: str) -> str:
        with self._lock:
            self.calls.append(("start", name))
            vm = self.vms[name]
            if zone in self.stockout_zones:
                raise CapacityError("stockout", reason="ZONE_RESOURCE_POOL_EXHAUSTED")
            if vm.status == "STOPPING":
                raise CapacityError("not ready", reason="RESOURCE_NOT_READY")
            self.vms[name] = replace(vm, status="RUNNING")
            return f"op-start-{name}-{request_id}"

    def stop(self, zone: str, name: str, request_id: str) -> str:
        with self._lock:
            self.calls.append(("stop", name))
            self.vms[name] = replace(self.vms[name], status="TERMINATED")
            return f"op-stop-{name}-{request_id}"

    def set_metadata(
        self, zone: str, name: str, items: dict[str, str], fingerprint: str | None, request_id: str
    ) -> str:
        with self._lock:
            self.calls.append(("set_metadata", name))
            vm = self.vms[name]
            if fingerprint != vm.fingerprint:
                raise PreconditionFailed("stale fingerprint")
            self.vms[name] = replace(
                vm, metadata={**vm.metadata, **items}, fingerprint=f"f{next(self._fingerprints)}"
            )
            return f"op-meta-{name}-{request_id}"

    def operation_error(self, zone: str, operation: str) -> str | None:
        return self.operation_errors.get(operation)
