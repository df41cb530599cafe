"""Usage's read (domain/usage.py): the terminal job documents finished in a time range.

One query, `finished_at >= start`, `finished_at < end` (and `caller ==` unless an admin asks
for everyone), ordered by `finished_at` then document id, read in pages of `PAGE_SIZE` with a
cursor and only the four fields usage needs (a projection: smaller answers; still one
document read each). A caller's query is served by the composite index `jobs_usage`
(terraform/firestore.tf); everyone's by the automatic single-field index on `finished_at`.
`finished_at` is set only on a job's terminal transition, so the range holds terminal jobs
only; jobs without a receipt are skipped here.

Warm stretches (`{vms}_warm_idle`, schema.WarmIdle, written by the VMs' workers) are read for an
admin's usage only: `ended_at` in the range (its automatic single-field index), in pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from comfyburst.adapters._firestore_docs import convert, from_doc
from comfyburst.domain.usage import UsageEntry
from comfyburst.schema import Receipt, WarmIdle

PAGE_SIZE = 1000
_FIELDS = ["caller", "finished_at", "receipt", "idle_after_s"]


def finished_entries(
    jobs: Any, caller: str | None, start: datetime, end: datetime, *, all_callers: bool = False
) -> Iterator[UsageEntry]:
    """The receipts of jobs finished in [start, end), oldest first, read a page at a time."""
    q: Any = jobs
    if not all_callers:
        q = q.where(filter=FieldFilter("caller", "==", caller))
    for snap in _in_range(q.select(_FIELDS), "finished_at", start, end):
        entry = _entry(snap.to_dict() or {})
        if entry is not None:
            yield entry


def _in_range(query: Any, field: str, start: datetime, end: datetime) -> Iterator[Any]:
    """The documents of `query` whose `field` lies in [start, end), ordered by it then by
    document id, read in pages of PAGE_SIZE with a cursor."""
    q = (
        query.where(filter=FieldFilter(field, ">=", start))
        .where(filter=FieldFilter(field, "<", end))
        .order_by(field, direction=firestore.Query.ASCENDING)
        .order_by("__name__", direction=firestore.Query.ASCENDING)
    )
    last = None
    while True:
        page = q.start_after(last) if last is not None else q
        snaps = list(page.limit(PAGE_SIZE).stream())
        yield from snaps
        if len(snaps) < PAGE_SIZE:
            return
        last = snaps[-1]


def _entry(data: dict[str, Any]) -> UsageEntry | None:
    fields = convert(data)
    if not fields.get("receipt") or fields.get("finished_at") is None:
        return None
    return UsageEntry(
        caller=fields.get("caller"),
        finished_at=fields["finished_at"],
        receipt=Receipt.model_validate(fields["receipt"]),
        idle_after_s=fields.get("idle_after_s"),
    )


def warm_idle_collection(vms_collection: str) -> str:
    """The collection of warm stretches, beside the VM documents'."""
    return f"{vms_collection}_warm_idle"


def warm_idle_entries(collection: Any, start: datetime, end: datetime) -> Iterator[WarmIdle]:
    """The warm stretches that ended in [start, end), oldest first, a page at a time."""
    for snap in _in_range(collection, "ended_at", start, end):
        yield from_doc(WarmIdle, snap.to_dict())
