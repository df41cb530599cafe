"""Read-side Firestore adapters of the API: job lists (JobLister) and change waits (JobWatcher).

Lists query `caller ==` (unless an admin lists all), `state in` (when filtered) and a
`created_at` range, ordered by `created_at` then document id, both descending; the composite
indexes are declared in terraform/firestore.tf. A label filter is one `label_pairs
array-contains` in the query (Firestore takes one per query); a second or third pair is
checked on the documents read, which are read lazily until the page is full, so such a
list reads at most the caller's jobs carrying the first pair.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from comfyburst.adapters._firestore_docs import from_doc
from comfyburst.adapters.firestore_usage import (
    finished_entries,
    warm_idle_collection,
    warm_idle_entries,
)
from comfyburst.domain.job_query import JobQuery
from comfyburst.domain.usage import UsageEntry
from comfyburst.schema import Job, WarmIdle
from comfyburst.states import JobState


class FirestoreJobViews:
    """Lists a caller's jobs and waits for a job document to change."""

    def __init__(self, client: firestore.Client, settings: Any) -> None:
        self._client = client
        self._jobs = client.collection(settings.jobs_collection)
        self._warm_idle = client.collection(warm_idle_collection(settings.vms_collection))

    def list_page(self, query: JobQuery, limit: int) -> list[Job]:
        q: Any = self._jobs
        if not query.all_callers:
            q = q.where(filter=FieldFilter("caller", "==", query.owner))
        if query.states:
            q = q.where(filter=FieldFilter("state", "in", [s.value for s in query.states]))
        if query.created_after is not None:
            q = q.where(filter=FieldFilter("created_at", ">=", query.created_after))
        if query.created_before is not None:
            q = q.where(filter=FieldFilter("created_at", "<", query.created_before))
        if query.labels:
            q = q.where(filter=FieldFilter("label_pairs", "array_contains", query.labels[0]))
        q = q.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            "__name__", direction=firestore.Query.DESCENDING
        )
        if query.after is not None:
            q = q.start_after(
                {
                    "created_at": query.after.created_at,
                    "__name__": self._jobs.document(query.after.job_id),
                }
            )
        if len(query.labels) <= 1:
            return [from_doc(Job, snap.to_dict()) for snap in q.limit(limit).stream()]
        wanted = set(query.labels[1:])
        jobs: list[Job] = []
        with closing(q.stream()) as stream:  # closing it ends the read early
            for snap in stream:
                job = from_doc(Job, snap.to_dict())
                if wanted.issubset(job.label_pairs):
                    jobs.append(job)
                    if len(jobs) >= limit:
                        break
        return jobs

    def count_jobs(self, caller: str | None, states: list[JobState]) -> int:
        """How many of the caller's jobs are in `states`: one aggregation query (billed one
        read per 1,000 index entries; equality filters only, served by single-field indexes)."""
        q: Any = self._jobs.where(filter=FieldFilter("caller", "==", caller)).where(
            filter=FieldFilter("state", "in", [s.value for s in states])
        )
        result = q.count(alias="n").get()
        return int(result[0][0].value)

    def usage_entries(
        self, caller: str | None, start: datetime, end: datetime, *, all_callers: bool = False
    ) -> Iterator[UsageEntry]:
        """The receipts of terminal jobs finished in [start, end) (adapters/firestore_usage.py)."""
        return finished_entries(self._jobs, caller, start, end, all_callers=all_callers)

    def warm_idle_entries(self, start: datetime, end: datetime) -> Iterator[WarmIdle]:
        """The warm stretches that ended in [start, end) (adapters/firestore_usage.py)."""
        return warm_idle_entries(self._warm_idle, start, end)

    def wait_for(self, job_id: str, changed: Callable[[Job], bool], timeout_s: float) -> Job | None:
        done = threading.Event()
        latest: list[Job] = []

        def on_snapshot(snapshots: list[Any], _changes: Any, _read_time: Any) -> None:
            for snap in snapshots:
                if not snap.exists:
                    continue
                job = from_doc(Job, snap.to_dict())
                latest[:] = [job]
                if changed(job):
                    done.set()

        watch = self._jobs.document(job_id).on_snapshot(on_snapshot)
        try:
            done.wait(timeout_s)
        finally:
            watch.unsubscribe()
        return latest[0] if latest else None
