"""Live previews in the node: while the remote job runs, its latest preview frame is fetched
(GET /jobs/{id}/preview, about once a second) and shown on the node as ComfyUI's samplers
show theirs. A preview that cannot be fetched or read is skipped; it never fails the run."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any

import requests
from PIL import Image

from ._vendor.comfyburst_core.client import ApiClient, ApiError

log = logging.getLogger(__name__)

PREVIEW_POLL_S = 1.0
# The API serves frames of at most 512 KiB; the node keeps its own guard against anything else.
MAX_PREVIEW_BYTES = 1024 * 1024
MAX_PREVIEW_PIXELS = 2048 * 2048
_FORMATS = {"JPEG", "PNG", "WEBP"}

Show = Callable[[int, Image.Image], None]


def decode_preview(data: bytes) -> Image.Image | None:
    """An RGB image from a preview frame, or None for anything but a small JPEG/PNG/WEBP."""
    if len(data) > MAX_PREVIEW_BYTES:
        return None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if opened.format not in _FORMATS or width * height > MAX_PREVIEW_PIXELS:
                return None
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


class PreviewPoller:
    """Called at each update of the job; asks for a frame at most every `every_s` while the
    job runs and shows only a frame that changed."""

    def __init__(
        self,
        client: ApiClient,
        job_id: str,
        show: Show,
        every_s: float = PREVIEW_POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client, self._job_id, self._show = client, job_id, show
        self._every_s, self._clock = every_s, clock
        self._asked_at: float | None = None
        self._last: bytes | None = None
        self.shown = 0

    def __call__(self, job: dict[str, Any], value: int) -> None:
        if job.get("state") != "running":
            return
        now = self._clock()
        if self._asked_at is not None and now - self._asked_at < self._every_s:
            return
        self._asked_at = now
        try:
            frame = self._client.preview(self._job_id)
        except (ApiError, requests.RequestException) as exc:
            log.debug("preview of %s not fetched: %s", self._job_id, exc)
            return
        if frame is None or frame[0] == self._last:
            return
        self._last = frame[0]
        image = decode_preview(frame[0])
        if image is not None:
            self._show(value, image)
            self.shown += 1
