"""Conversions between image files and ComfyUI IMAGE batches ([B, H, W, C] float32 in 0..1)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def decode_batch(blobs: list[bytes]) -> np.ndarray:
    """Image files → one [B, H, W, 3] float32 array; sizes that differ from the first image
    are resized to it (an IMAGE batch has one size)."""
    if not blobs:
        raise ValueError("no images to decode")
    frames: list[np.ndarray] = []
    size: tuple[int, int] | None = None
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as image:
            rgb = image.convert("RGB")
        if size is None:
            size = rgb.size
        elif rgb.size != size:
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        frames.append(np.asarray(rgb, dtype=np.float32) / 255.0)
    return np.stack(frames)


def to_tensor(batch: np.ndarray) -> Any:
    """The numpy batch as a torch tensor (ComfyUI's IMAGE type)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(batch))


def encode_png(image: Any) -> list[bytes]:
    """An IMAGE batch (torch tensor or numpy array) → one PNG file per image."""
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an IMAGE batch [B, H, W, C], got shape {array.shape}")
    pngs = []
    for frame in array:
        pixels = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs
