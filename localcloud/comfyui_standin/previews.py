"""Preview frames of the stand-in's sampler, shaped like the real server's binary websocket
frames (tests/test_data/comfyui_api/ws_preview_binary_frames.json).

The stand-in's sampler is its slow node (faults.py): each progress step carries a preview when
the server runs with a preview method other than `none`, as `--preview-method` does for the real
server. A client that announced `supports_preview_metadata` gets the metadata form before the
step's `progress` message; others get the legacy form after it, like the transcript.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

from PIL import Image

PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_LEGACY_FORMATS = {"JPEG": 1, "PNG": 2}
_SIZE_PX = 64


def preview_image(step: int, steps: int) -> bytes:
    """A small JPEG that brightens with each step (a latent2rgb-like frame)."""
    level = round(255 * step / max(steps, 1))
    image = Image.new("RGB", (_SIZE_PX, _SIZE_PX), (level, 96, 255 - level))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def legacy_frame(image: bytes, image_format: str = "JPEG") -> bytes:
    """`u32be 1 (PREVIEW_IMAGE)`, `u32be 1=JPEG|2=PNG`, the image bytes."""
    return struct.pack(">II", PREVIEW_IMAGE, _LEGACY_FORMATS[image_format]) + image


def metadata_frame(image: bytes, metadata: dict[str, Any]) -> bytes:
    """`u32be 4`, `u32be len`, the JSON metadata (spaced like Python's json.dumps), the image."""
    text = json.dumps(metadata).encode("utf-8")
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(text)) + text + image


def step_metadata(node_id: str, prompt_id: str) -> dict[str, Any]:
    """The metadata of a top-level node's preview, keys in the real server's order."""
    return {
        "node_id": node_id,
        "prompt_id": prompt_id,
        "display_node_id": node_id,
        "parent_node_id": None,
        "real_node_id": node_id,
        "image_type": "image/jpeg",
    }
