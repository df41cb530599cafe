"""Live previews: ComfyUI's binary preview frames of the running prompt, forwarded as one small
object in the outputs bucket (the latest frame, at most about once a second); never Firestore.

Frames (see tests/test_data/comfyui_api/ws_preview_binary_frames.json): a legacy client gets
`u32be 1, u32be 1=JPEG|2=PNG, image`; a client that announced `supports_preview_metadata` gets
`u32be 4, u32be n, n bytes of JSON metadata (prompt_id, image_type…), image`.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass

from comfyburst.domain.previews import PREVIEW_MIN_INTERVAL_S, preview_object, preview_type
from comfyburst.ports import BlobStore
from comfyburst_worker.progress import ProgressWriter

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_LEGACY_TYPES = {1: "image/jpeg", 2: "image/png"}
_HEAD = struct.Struct(">II")
# The metadata is a few ids (166 bytes in the transcript); more is not a preview frame.
MAX_METADATA_BYTES = 4096
FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})


@dataclass(frozen=True)
class Preview:
    data: bytes
    content_type: str


def parse_frame(raw: bytes, prompt_id: str) -> Preview | None:
    """The preview in a binary frame, if it is one of `prompt_id` (a legacy frame names no
    prompt: the agent's socket follows one prompt at a time) and its bytes are the image type
    it claims, within the size bound; None otherwise."""
    if len(raw) < _HEAD.size:
        return None
    event, second = _HEAD.unpack_from(raw)
    if event == PREVIEW_IMAGE:
        claimed, image = _LEGACY_TYPES.get(second), raw[_HEAD.size :]
    elif event == PREVIEW_IMAGE_WITH_METADATA:
        end = _HEAD.size + second
        if second > MAX_METADATA_BYTES or end > len(raw):
            return None
        try:
            metadata = json.loads(raw[_HEAD.size : end])
        except ValueError:
            return None
        if not isinstance(metadata, dict) or metadata.get("prompt_id") != prompt_id:
            return None
        claimed, image = metadata.get("image_type"), raw[end:]
    else:
        return None
    actual = preview_type(image)
    if actual is None or actual != claimed:
        return None
    return Preview(image, actual)


class PreviewForwarder:
    """Takes every binary frame of one run; uploads the newest valid preview off-thread, at
    most once per interval; `close` removes the object. Nothing here raises into the run."""

    def __init__(
        self,
        blobs: BlobStore,
        bucket: str,
        job_id: str,
        prompt_id: str,
        min_interval_s: float = PREVIEW_MIN_INTERVAL_S,
    ) -> None:
        self._blobs, self._bucket, self.prompt_id = blobs, bucket, prompt_id
        self.name = preview_object(job_id)
        self.written = 0
        self._writer: ProgressWriter[Preview] = ProgressWriter(
            self._upload, min_interval_s, name="preview"
        )

    def offer(self, raw: bytes) -> None:
        """One binary frame from ComfyUI's websocket."""
        try:
            preview = parse_frame(raw, self.prompt_id)
        except Exception as exc:  # a malformed frame costs a preview, never the job
            log.warning("preview frame unreadable: %s", type(exc).__name__)
            return
        if preview is not None:
            self._writer.submit(preview)

    def close(self) -> None:
        """Stop forwarding (a pending frame is dropped) and delete the object, so nothing of
        the run's previews outlives it."""
        self._writer.close(flush=False)
        if not self.written:
            return
        try:
            self._blobs.delete(self._bucket, self.name)
        except Exception as exc:
            log.warning("preview %s not deleted: %s", self.name, exc)

    def _upload(self, preview: Preview) -> None:
        self._blobs.write(self._bucket, self.name, preview.data, preview.content_type)
        self.written += 1
