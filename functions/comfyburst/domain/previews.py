"""Live previews: where the latest frame of a running job lives and what it may be. Pure, no I/O.

The worker writes one object per job, overwritten at most about once a second, in the outputs
bucket (no trigger watches it; the done trigger watches only the signals bucket). The API hands
it out while the job runs. Both check it with `preview_type`, the one rule for what a preview
may be: a JPEG, PNG or WEBP image of at most MAX_PREVIEW_BYTES.
"""

from __future__ import annotations

# ComfyUI's previews are at most 512 px (its --preview-size default) JPEGs of ~40 KB; a frame
# far larger is not a preview.
MAX_PREVIEW_BYTES = 512 * 1024
PREVIEW_MIN_INTERVAL_S = 1.0

PREVIEW_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp")
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)


def preview_object(job_id: str) -> str:
    """The object name of a job's latest preview in the outputs bucket."""
    return f"jobs/{job_id}/preview"


def preview_type(data: bytes) -> str | None:
    """The content type of an acceptable preview (by its bytes, not by any claim), else None."""
    if not data or len(data) > MAX_PREVIEW_BYTES:
        return None
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return content_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
