"""A draining worker's ear on its class's queue: a Firestore listen (`on_snapshot`) on the
oldest queued job of one GPU class, so a job queued while the VM idles wakes it at once
instead of at its next poll, and an idle VM makes no query while the queue stays empty.

The query is `state == queued`, `gpu_class ==` the class, ordered by `created_at`, limit 1:
the fields of the (gpu_class, state, created_at) index the class's queue listing uses. Only
the queue's head is in the result, so a backlog sends the listen nothing but head changes. The
first snapshot is the queue as the listen starts, so nothing queued before it is missed.

A listen the client cannot recover (it stops; the library calls no callback then) shows as
`live` False: the agent then polls as it did before listeners (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from comfyburst.states import JobState

log = logging.getLogger(__name__)


class FirestoreQueueWatch:
    """Wakes `changed` whenever the head of one class's queue changes; `queued` is what the
    latest snapshot held (0: the queue is empty; None: no snapshot yet)."""

    def __init__(self, client: firestore.Client, jobs_collection: str, gpu_class: str) -> None:
        self._query: Any = (
            client.collection(jobs_collection)
            .where(filter=FieldFilter("state", "==", JobState.QUEUED.value))
            .where(filter=FieldFilter("gpu_class", "==", gpu_class))
            .order_by("created_at")
            .limit(1)
        )
        self.gpu_class = gpu_class
        self.changed = threading.Event()
        self.queued: int | None = None
        self._watch: Any = None

    def start(self) -> FirestoreQueueWatch:
        """Open the listen; a failure to open leaves the watch not live (the agent polls)."""
        try:
            self._watch = self._query.on_snapshot(self._on_snapshot)
        except Exception as exc:
            log.warning("listening to the %s queue failed: %s; polling", self.gpu_class, exc)
        return self

    def _on_snapshot(self, snapshots: list[Any], _changes: Any, _read_time: Any) -> None:
        self.queued = len(snapshots)
        self.changed.set()

    @property
    def live(self) -> bool:
        """Whether the listen still streams (the client recovers what it can by itself)."""
        watch = self._watch
        return watch is not None and bool(watch.is_active)

    def stop(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            try:
                watch.unsubscribe()
            except Exception as exc:  # closing a broken listen may raise its error again
                log.info("closing the %s queue listen: %s", self.gpu_class, exc)
