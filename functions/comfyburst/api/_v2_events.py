"""`GET /api/v2/jobs/{id}/events`: the job's live state as Server-Sent Events.

On connect: the current `status`, and the latest `progress` and `preview` while it runs (a
preview is the frame the worker last wrote, services/preview.py: sent again only when its
bytes change, looked at on each change and each keepalive); then each change,
as the job document changes (the same Firestore listener as `GET /jobs/{id}?wait_s=`, no
polling), an `output` for each output as it lands, and the terminal `status`, after which the
stream ends. A stream also ends after STREAM_S without reaching the end, so it never outlives
the API's request timeout; the SDK then reads the job and reconnects. A comment line every
KEEPALIVE_S keeps idle proxies from closing it. Each instance holds at most
MAX_STREAMS_PER_CALLER open streams per caller (429 `too_many_streams` beyond).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import flask

from comfyburst.api._v2_views import job_body, v2_status
from comfyburst.errors import QueueFull
from comfyburst.schema import Job
from comfyburst.services import job_wait
from comfyburst.services.preview import latest_preview
from comfyburst.services.status import refresh_urls

logger = logging.getLogger(__name__)

STREAM_S = 55.0
KEEPALIVE_S = 15.0
MAX_STREAMS_PER_CALLER = 4
RETRY_AFTER_S = 5


class TooManyStreams(QueueFull):
    """The caller already has MAX_STREAMS_PER_CALLER streams open on this instance."""

    code = "too_many_streams"

    def __init__(self) -> None:
        super().__init__(
            f"at most {MAX_STREAMS_PER_CALLER} event streams may be open at once; "
            "close one, or poll the job",
            max_queued=MAX_STREAMS_PER_CALLER,
            retry_after_s=RETRY_AFTER_S,
        )
        self.details = {"max_streams": MAX_STREAMS_PER_CALLER}


class _OpenStreams:
    """Open streams per caller on this instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def acquire(self, caller: str | None) -> None:
        key = caller or ""
        with self._lock:
            if self._open.get(key, 0) >= MAX_STREAMS_PER_CALLER:
                raise TooManyStreams()
            self._open[key] = self._open.get(key, 0) + 1

    def open_count(self, caller: str | None) -> int:
        with self._lock:
            return self._open.get(caller or "", 0)

    def release(self, caller: str | None) -> None:
        key = caller or ""
        with self._lock:
            left = self._open.get(key, 0) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)


OPEN_STREAMS = _OpenStreams()


def event_stream(api: Any, job: Job, caller: str | None) -> flask.Response:
    """The streaming answer; the caller's slot is given back when the answer is closed."""
    OPEN_STREAMS.acquire(caller)
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            OPEN_STREAMS.release(caller)

    response = flask.Response(_frames(api, job), 200, mimetype="text/event-stream")
    response.call_on_close(release)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _frames(api: Any, job: Job) -> Iterator[str]:
    try:
        yield from _changes(api, job)
    except Exception:
        # The answer has started: end the stream; the client reads the job and reconnects.
        logger.exception("event stream failed", extra={"job_id": job.job_id})


class _Previews:
    """`preview` frames of a running job: its latest frame, each distinct one sent once."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self._sent: bytes | None = None

    def frames(self, job: Job) -> Iterator[str]:
        image = latest_preview(self._api.blobs, self._api.settings.outputs_bucket, job)
        if image is None:
            return
        digest = hashlib.sha256(image.data).digest()
        if digest == self._sent:
            return
        self._sent = digest
        yield _frame(
            "preview",
            {
                # We keep the frame, not the node that sent it: the node running, if known.
                "node_id": job.progress.node or "",
                "content_type": image.content_type,
                "data_base64": base64.b64encode(image.data).decode("ascii"),
            },
        )


def _changes(api: Any, job: Job) -> Iterator[str]:
    body = job_body(job)
    previews = _Previews(api)
    if not job.state.terminal:
        yield _frame("status", {"status": body["status"], "queue_position": None})
        if body["progress"] is not None:
            yield _frame("progress", body["progress"])
        yield from previews.frames(job)
    sent_outputs = 0
    deadline = time.monotonic() + STREAM_S
    current = job
    while not current.state.terminal:
        left = deadline - time.monotonic()
        if left <= 0:
            return  # the client reconnects (the SDK first reads the job)
        changed = job_wait.wait_for_change(api.views, current, min(KEEPALIVE_S, left))
        if changed is current:
            # The worker replaces its frame without touching the job document: look again.
            yield from previews.frames(current)
            yield ": keepalive\n\n"
            continue
        outputs, _ = refresh_urls(changed, api.signer, api.clock.now())
        changed = changed.model_copy(update={"outputs": outputs})
        new = job_body(changed)
        if v2_status(changed) != v2_status(current) and not changed.state.terminal:
            yield _frame("status", {"status": new["status"], "queue_position": None})
        if new["progress"] is not None and new["progress"] != job_body(current)["progress"]:
            yield _frame("progress", new["progress"])
        yield from previews.frames(changed)
        for output in new["outputs"][sent_outputs:]:
            yield _frame("output", output)
        sent_outputs = len(new["outputs"])
        current = changed
    for output in job_body(current)["outputs"][sent_outputs:]:
        yield _frame("output", output)
    yield _frame("status", {"status": v2_status(current), "queue_position": None})


def _frame(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
