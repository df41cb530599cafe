"""JobStore port over google-cloud-firestore: jobs, VM leases and idempotency documents."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import tenacity
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from comfyburst.adapters._firestore_docs import (
    convert,
    from_doc,
    idempotency_doc_id,
    to_doc,
)
from comfyburst.adapters._firestore_docs import (
    job_doc as job_doc,  # tests and tools seed jobs with it
)
from comfyburst.adapters.firestore_usage import warm_idle_collection
from comfyburst.domain import scheduling
from comfyburst.errors import Contended, JobExists, NotFound, PreconditionFailed
from comfyburst.ports import JobMutation, JobWrite, LeaseRead, LeaseWrite, SlotRequest
from comfyburst.schema import Job, VmRecord, WarmIdle
from comfyburst.states import JobState

# A job document has a few writers at most (API cancel, worker, trigger, reaper, duplicate done
# events). The client retries an aborted commit at once, and an aborted read in the transaction
# not at all; under contention every writer then retries in lock step and some give up (the
# caller saw a 500). So each transaction gets a few immediate attempts, and a transaction that
# still lost (or whose read was aborted) is run again after a jittered exponential backoff.
TRANSACTION_MAX_ATTEMPTS = 5
CONTENDED_RUNS = 12
CONTENDED_BACKOFF_MAX_S = 2.0
LIST_PAGE_SIZE = 300


# `last_started`'s one-document queries in flight at once.
_SERVED_QUERIES_AT_ONCE = 8


class CollectionNames(Protocol):
    """The collection names the store needs (FunctionSettings has them; so does `Collections`)."""

    @property
    def jobs_collection(self) -> str: ...
    @property
    def vms_collection(self) -> str: ...
    @property
    def idempotency_collection(self) -> str: ...


@dataclass(frozen=True)
class Collections:
    """Collection names on their own, for callers without FunctionSettings (the worker)."""

    jobs_collection: str = "jobs"
    vms_collection: str = "vms"
    idempotency_collection: str = "idempotency"


class FirestoreJobStore:
    """Jobs in `jobs/{id}`, leases in `vms/{name}`, keys in `idempotency/{key}`, each GPU
    class's create reservations in `{vms}_slots/{class}`."""

    def __init__(
        self,
        client: firestore.Client,
        settings: CollectionNames,
        *,
        list_page_size: int = LIST_PAGE_SIZE,
        transaction_attempts: int = TRANSACTION_MAX_ATTEMPTS,
        contended_runs: int = CONTENDED_RUNS,
    ) -> None:
        self._client = client
        self._list_page_size = list_page_size
        self._transaction_attempts = transaction_attempts
        self._contended_retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_contended),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=CONTENDED_BACKOFF_MAX_S),
            stop=tenacity.stop_after_attempt(contended_runs),
            reraise=True,
        )
        self._jobs = client.collection(settings.jobs_collection)
        self._vms = client.collection(settings.vms_collection)
        self._idempotency = client.collection(settings.idempotency_collection)
        self._slots = client.collection(f"{settings.vms_collection}_slots")
        self._warm_idle = client.collection(warm_idle_collection(settings.vms_collection))

    # --- jobs -------------------------------------------------------------------------

    def create_job(self, job: Job) -> tuple[Job, bool]:
        batch = self._client.batch()
        if job.idempotency_key is not None:
            key_ref = self._idempotency.document(idempotency_doc_id(job.idempotency_key))
            batch.create(key_ref, {"job_id": job.job_id, "created_at": job.created_at})
        batch.create(self._jobs.document(job.job_id), to_doc(job))
        try:
            batch.commit()
        except gexc.AlreadyExists:
            if job.idempotency_key is None:
                raise PreconditionFailed(f"job {job.job_id} already exists") from None
            return self._earlier_job(job), False
        return job, True

    def _earlier_job(self, job: Job) -> Job:
        key = job.idempotency_key or ""
        snap = self._idempotency.document(idempotency_doc_id(key)).get()
        earlier_id = (snap.to_dict() or {}).get("job_id") if snap.exists else None
        earlier = self.get_job(earlier_id) if earlier_id else None
        if earlier is None:
            # Batches are atomic, so this is a job id collision rather than a lost key.
            raise PreconditionFailed(f"job {job.job_id} already exists")
        return earlier

    def get_job(self, job_id: str) -> Job | None:
        return self.read_job(job_id)[0]

    def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        refs = [self._jobs.document(job_id) for job_id in dict.fromkeys(job_ids)]
        snaps = self._client.get_all(refs) if refs else []
        return [from_doc(Job, snap.to_dict()) for snap in snaps if snap.exists]

    def read_job(self, job_id: str) -> tuple[Job | None, object | None]:
        snap = self._jobs.document(job_id).get()
        if not snap.exists:
            return None, None
        return from_doc(Job, snap.to_dict()), snap.update_time

    def update_job(self, job_id: str, mutate: JobMutation) -> Job:
        ref = self._jobs.document(job_id)

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> Job:
            snap = ref.get(transaction=transaction)
            if not snap.exists:
                raise NotFound(f"job {job_id} not found")
            current = from_doc(Job, snap.to_dict())
            updated = mutate(current)
            if updated is None:
                return current
            if updated.job_id != job_id:
                raise ValueError("a mutation must not change the job id")
            transaction.set(ref, to_doc(updated))
            return updated

        try:
            for attempt in self._contended_retrying:
                with attempt:
                    result: Job = run(
                        self._client.transaction(max_attempts=self._transaction_attempts)
                    )
        except (ValueError, gexc.Aborted) as exc:
            if _contended(exc):  # callers answer 409 `contended` with Retry-After, never a 5xx
                raise Contended(f"job {job_id} stayed contended", retry_after_s=2) from exc
            raise
        return result

    def patch_job(self, job_id: str, fields: dict[str, object]) -> None:
        if any(path == "state" or path.startswith("state.") for path in fields):
            raise ValueError("patch_job never changes the state; use update_job")
        try:
            self._jobs.document(job_id).update(convert(fields))
        except gexc.NotFound:
            raise NotFound(f"job {job_id} not found") from None

    def list_jobs(
        self, states: Iterable[JobState], limit: int | None = 500, gpu_class: str | None = None
    ) -> list[Job]:
        values = [JobState(s).value for s in states]
        if not values:
            return []
        base = self._jobs.where(filter=FieldFilter("state", "in", values))
        if gpu_class is not None:  # served by the (gpu_class, state, created_at) index
            base = base.where(filter=FieldFilter("gpu_class", "==", gpu_class))
        base = base.order_by("created_at")
        found: list[Job] = []
        cursor = None
        # Page by page (a cursor on the last document read): `limit=None` means every job.
        while limit is None or len(found) < limit:
            page = (
                self._list_page_size
                if limit is None
                else min(self._list_page_size, limit - len(found))
            )
            query = base.limit(page) if cursor is None else base.start_after(cursor).limit(page)
            snaps = list(query.stream())
            found.extend(from_doc(Job, snap.to_dict()) for snap in snaps)
            if len(snaps) < page:
                break
            cursor = snaps[-1]
        return found

    def queued_heads(self, gpu_class: str, most: int) -> list[Job]:
        """The oldest queued job of each caller of `gpu_class` (at most `most` callers, by name):
        a skip scan, one query of one document per caller (`caller >` the last one, ordered by
        caller then created_at; index jobs_queue["class_state_caller"]). No-caller jobs (an API
        without auth) are not scanned."""
        base = self._jobs.where(filter=FieldFilter("state", "==", JobState.QUEUED.value)).where(
            filter=FieldFilter("gpu_class", "==", gpu_class)
        )
        heads: list[Job] = []
        after: tuple[str, str] = (">=", "")  # every string caller
        while len(heads) < most:
            query = base.where(filter=FieldFilter("caller", *after))
            snaps = list(query.order_by("caller").order_by("created_at").limit(1).stream())
            if not snaps:
                break
            head = from_doc(Job, snaps[0].to_dict())
            heads.append(head)
            after = (">", head.caller or "")
        return heads

    def last_started(
        self, gpu_class: str, callers: Iterable[str | None]
    ) -> dict[str | None, datetime]:
        """{caller: when its latest job of `gpu_class` started}, for fair share's "served least
        recently": one query of one document per caller (`caller ==`, `gpu_class ==`, ordered
        by started_at descending, only that field read; index jobs_served). A caller whose
        jobs of the class never started is absent (its null `started_at` sorts last)."""

        def latest(caller: str | None) -> datetime | None:
            query = (
                self._jobs.where(filter=FieldFilter("caller", "==", caller))
                .where(filter=FieldFilter("gpu_class", "==", gpu_class))
                .order_by("started_at", direction=firestore.Query.DESCENDING)
                .select(["started_at"])
                .limit(1)
            )
            for snap in query.stream():
                at = (snap.to_dict() or {}).get("started_at")
                if isinstance(at, datetime):
                    return at
            return None

        # The queries at once (a claim waits on them): their round trips overlap.
        wanted = list(dict.fromkeys(callers))
        if len(wanted) <= 1:
            starts = [latest(caller) for caller in wanted]
        else:
            with ThreadPoolExecutor(min(len(wanted), _SERVED_QUERIES_AT_ONCE)) as pool:
                starts = list(pool.map(latest, wanted))
        return {c: at for c, at in zip(wanted, starts, strict=True) if at is not None}

    def list_unpublished_results(self, limit: int = 100) -> list[Job]:
        # Equality filters only (`== None` is IS_NULL): served by single-field indexes, no
        # composite index to deploy. Every job document carries the field (null until sent).
        terminal = [s.value for s in JobState if s.terminal]
        query = (
            self._jobs.where(filter=FieldFilter("state", "in", terminal))
            .where(filter=FieldFilter("result_published_at", "==", None))
            .limit(limit)
        )
        return [from_doc(Job, snap.to_dict()) for snap in query.stream()]

    # --- VM leases ----------------------------------------------------------------------

    def get_vm(self, name: str) -> tuple[VmRecord | None, object | None]:
        snap = self._vms.document(name).get()
        if not snap.exists:
            return None, None
        return from_doc(VmRecord, snap.to_dict()), snap.update_time

    def list_vms(self) -> list[VmRecord]:
        return [from_doc(VmRecord, snap.to_dict()) for snap in self._vms.stream()]

    def put_vm(self, vm: VmRecord, expected_version: object | None) -> object:
        ref = self._vms.document(vm.name)
        doc = to_doc(vm)
        try:
            if expected_version is None:
                result = ref.create(doc)
            else:
                option = self._client.write_option(last_update_time=expected_version)
                result = ref.update(doc, option=option)
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound) as exc:
            raise PreconditionFailed(f"vm {vm.name} changed: {exc.message}") from None
        return result.update_time

    def add_warm_idle(self, record: WarmIdle) -> None:
        # One document per stretch (the VM and its start): a retried write is the same write.
        stamp = int(record.started_at.timestamp() * 1000)
        self._warm_idle.document(f"{record.vm_name}-{stamp}").set(to_doc(record))

    # --- one commit: leases and the job ---------------------------------------------------

    # --- create reservations (one document per GPU class) ------------------------------

    def reserve_slot(self, request: SlotRequest) -> str | None:
        ref = self._slots.document(idempotency_doc_id(request.gpu_class))
        # Optimistic, not a transaction: read the document with its update time, write it back
        # only if unchanged (or create it if absent). Creators that race lose a precondition at
        # once and re-read; none waits on another's lock (a transaction's read locks the one
        # document, and on the emulator a waiting commit sits until its lock timeout).
        # A class at its limit is refused on the plain read alone: nothing is written.
        try:
            return self._reserve_optimistically(ref, request)
        except _LostRace as exc:
            raise Contended("the pool's slots stayed contended", retry_after_s=2) from exc

    def _reserve_optimistically(self, ref: Any, request: SlotRequest) -> str | None:
        for attempt in self._contended_retrying:
            with attempt:
                snap = ref.get()
                reserved = _reservations(snap)
                kept, refused = scheduling.reserve_for(reserved, request)
                if kept == reserved:
                    return refused
                vms = {n: {"zone": r.zone, "at": r.at} for n, r in kept.items()}
                doc = {"gpu_class": request.gpu_class, "vms": vms}
                try:
                    if snap.exists:
                        option = self._client.write_option(last_update_time=snap.update_time)
                        ref.update(doc, option=option)  # top-level fields: replaced whole
                    else:
                        ref.create(doc)
                except (gexc.AlreadyExists, gexc.FailedPrecondition) as exc:
                    raise _LostRace(str(exc)) from exc
                return refused
        raise AssertionError("unreachable: the retrying loop raises or returns")

    def release_slot(self, gpu_class: str, name: str) -> None:
        ref = self._slots.document(idempotency_doc_id(gpu_class))
        # One field's delete is atomic on its own: no transaction, no contention with creators.
        with contextlib.suppress(gexc.NotFound):
            ref.update({FieldPath("vms", name).to_api_repr(): firestore.DELETE_FIELD})

    def read_for_lease(self, vm_name: str, job_id: str) -> LeaseRead:
        vm_ref, job_ref = self._vms.document(vm_name), self._jobs.document(job_id)
        snaps = {snap.reference.path: snap for snap in self._client.get_all([vm_ref, job_ref])}
        vm_snap, job_snap = snaps.get(vm_ref.path), snaps.get(job_ref.path)
        record = from_doc(VmRecord, vm_snap.to_dict()) if vm_snap and vm_snap.exists else None
        job = from_doc(Job, job_snap.to_dict()) if job_snap and job_snap.exists else None
        return LeaseRead(
            record,
            vm_snap.update_time if record is not None and vm_snap else None,
            job,
            job_snap.update_time if job is not None and job_snap else None,
        )

    def commit(
        self, vms: Sequence[LeaseWrite], job: JobWrite | None = None
    ) -> tuple[list[object], object | None]:
        batch = self._client.batch()
        for write in vms:
            ref, doc = self._vms.document(write.record.name), to_doc(write.record)
            if write.version is None:
                batch.create(ref, doc)
            else:
                option = self._client.write_option(last_update_time=write.version)
                batch.update(ref, doc, option=option)
        creating = job is not None and job.version is None
        if job is not None:
            ref = self._jobs.document(job.job.job_id)
            if job.version is None:
                key = job.job.idempotency_key
                if key is not None:
                    key_ref = self._idempotency.document(idempotency_doc_id(key))
                    key_doc = {"job_id": job.job.job_id, "created_at": job.job.created_at}
                    batch.create(key_ref, key_doc)
                batch.create(ref, to_doc(job.job))
            else:
                option = self._client.write_option(last_update_time=job.version)
                batch.update(ref, to_doc(job.job), option=option)
        try:
            results = batch.commit()
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound) as exc:
            if creating and job is not None:
                # Which write failed is not said: a stored job (or key) means a retried submit.
                earlier = self._stored_job(job.job)
                if earlier is not None:
                    raise JobExists(earlier) from None
            raise PreconditionFailed(f"commit lost a precondition: {exc.message}") from None
        # One result per write, in order; the idempotency document's comes before the job's.
        versions = [result.update_time for result in results[: len(vms)]]
        return versions, results[-1].update_time if job is not None else None

    def _stored_job(self, job: Job) -> Job | None:
        if job.idempotency_key is not None:
            snap = self._idempotency.document(idempotency_doc_id(job.idempotency_key)).get()
            earlier_id = (snap.to_dict() or {}).get("job_id") if snap.exists else None
            if earlier_id:
                return self.get_job(earlier_id)
        return self.get_job(job.job_id)


def _reservations(snap: Any) -> dict[str, scheduling.Reservation]:
    """A class's reservation document as stored (absent: none)."""
    stored = (snap.to_dict() or {}).get("vms", {}) if snap.exists else {}
    return {
        name: scheduling.Reservation(zone=item["zone"], at=item["at"])
        for name, item in stored.items()
    }


class _LostRace(Exception):
    """A precondition write lost to another writer: read again and decide again."""


def _contended(exc: BaseException) -> bool:
    """A transaction that lost to other writers: its read was aborted, or every commit was;
    or a precondition write that lost (`_LostRace`)."""
    if isinstance(exc, (gexc.Aborted, _LostRace)):
        return True
    return isinstance(exc, ValueError) and isinstance(exc.__cause__, gexc.Aborted)
