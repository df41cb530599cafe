"""Every output file of a run (images, gifs, video, audio…), fetched from ComfyUI and stored."""

from __future__ import annotations

import hashlib
import io
import mimetypes
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from comfyburst.ports import BlobStore
from comfyburst.schema import OutputFile, OutputFormat
from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.errors import OutputError

_FORMATS = {
    OutputFormat.PNG: ("PNG", ".png", "image/png"),
    OutputFormat.WEBP: ("WEBP", ".webp", "image/webp"),
    OutputFormat.JPEG: ("JPEG", ".jpg", "image/jpeg"),
}
_CONVERTIBLE = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class OutputRef:
    """One `{filename, subfolder, type}` entry of a node's output."""

    node_id: str
    filename: str
    subfolder: str
    folder_type: str
    # ComfyUI marks a node's `images` as frames of one animation with `animated: [true]`.
    animated: bool = False


def output_refs(outputs: dict[str, Any]) -> list[OutputRef]:
    """Every file entry under every node's outputs, whatever the key; temp files skipped."""
    refs: list[OutputRef] = []
    seen: set[tuple[str, str, str]] = set()
    for node_id, node_out in outputs.items():
        if not isinstance(node_out, dict):
            continue
        animated = _animated(node_out)
        for output_key, items in node_out.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                    continue
                folder_type = str(item.get("type") or "output")
                if folder_type == "temp":
                    continue
                key = (item["filename"], str(item.get("subfolder") or ""), folder_type)
                if key not in seen:
                    seen.add(key)
                    frames = animated and output_key == "images"
                    refs.append(OutputRef(str(node_id), *key, animated=frames))
    return refs


def _animated(node_out: dict[str, Any]) -> bool:
    """ComfyUI's per-node flag: `animated` is a list of booleans beside `images`."""
    flags = node_out.get("animated")
    return isinstance(flags, list) and any(flag is True for flag in flags)


def _object_names(refs: list[OutputRef]) -> list[str]:
    """The bare file name, or subfolder/name where two outputs share a bare name."""
    counts: dict[str, int] = {}
    for ref in refs:
        counts[ref.filename] = counts.get(ref.filename, 0) + 1
    return [
        posixpath.join(ref.subfolder, ref.filename)
        if counts[ref.filename] > 1 and ref.subfolder
        else ref.filename
        for ref in refs
    ]


def convert(data: bytes, name: str, fmt: OutputFormat) -> tuple[bytes, str, str | None]:
    """Re-encode an image in the requested format; other files pass unchanged."""
    stem, ext = posixpath.splitext(name)
    if fmt is OutputFormat.ORIGINAL or ext.lower() not in _CONVERTIBLE:
        return data, name, None
    pil_format, new_ext, content_type = _FORMATS[fmt]
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        image: Image.Image = opened
        if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format=pil_format)
    return buffer.getvalue(), stem + new_ext, content_type


class OutputCollector:
    """Downloads the outputs of a finished prompt and uploads them to the outputs bucket."""

    def __init__(self, comfy: ComfyClient, blobs: BlobStore, bucket: str, workers: int = 4) -> None:
        self.comfy, self.blobs, self.bucket = comfy, blobs, bucket
        self.workers = workers

    def collect(self, job_id: str, outputs: dict[str, Any], fmt: OutputFormat) -> list[OutputFile]:
        refs = output_refs(outputs)
        names = _object_names(refs)
        if len(refs) <= 1:
            return [self._one(job_id, r, n, fmt) for r, n in zip(refs, names, strict=True)]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(refs))) as pool:
            pairs = zip(refs, names, strict=True)
            return list(pool.map(lambda rn: self._one(job_id, rn[0], rn[1], fmt), pairs))

    def _one(self, job_id: str, ref: OutputRef, name: str, fmt: OutputFormat) -> OutputFile:
        data, content_type = self.comfy.view(ref.filename, ref.subfolder, ref.folder_type)
        # Re-encoding would keep one frame of an animation: animated files pass unchanged.
        try:
            data, name, converted_type = convert(
                data, name, OutputFormat.ORIGINAL if ref.animated else fmt
            )
        except Exception as exc:
            message = f"output {ref.filename} could not be converted to {fmt.value}: {exc}"
            raise OutputError(message) from None
        content_type = (
            converted_type
            or _clean_type(content_type)
            or mimetypes.guess_type(name)[0]
            or "application/octet-stream"
        )
        object_name = f"jobs/{job_id}/outputs/{name}"
        try:
            self.blobs.write(self.bucket, object_name, data, content_type)
        except Exception as exc:
            raise OutputError(f"output {name} could not be stored: {exc}") from None
        return OutputFile(
            name=name,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            content_type=content_type,
            gs_uri=f"gs://{self.bucket}/{object_name}",
            node_id=ref.node_id,
            animated=ref.animated,
        )


def _clean_type(value: str | None) -> str | None:
    if not value:
        return None
    value = value.split(";", 1)[0].strip()
    return None if value in ("application/octet-stream", "") else value
