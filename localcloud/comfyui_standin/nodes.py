"""The image-only core nodes the ComfyUI stand-in really executes (Pillow + numpy).

IMAGE values are float32 numpy batches shaped (batch, height, width, 3) in [0, 1];
MASK values are (batch, height, width). Each node takes its inputs as keyword arguments
and returns a NodeResult (output slot values, and the UI dict for output nodes).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from ._paths import Dirs, resolve_annotated


@dataclass(frozen=True)
class NodeContext:
    """What a node may need beyond its inputs."""

    dirs: Dirs
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    node_id: str = ""


@dataclass
class NodeResult:
    """Output slot values and, for output nodes, the UI dict sent in `executed`."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = field(default=None)


_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def to_pil(frame: np.ndarray) -> Image.Image:
    """One (H, W, 3) float frame → an RGB PIL image."""
    return Image.fromarray((np.clip(frame, 0.0, 1.0) * 255.0).round().astype(np.uint8), "RGB")


def from_pil(images: list[Image.Image]) -> np.ndarray:
    """RGB PIL images of one size → an IMAGE batch."""
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])


def empty_image(
    ctx: NodeContext, width: Any, height: Any, batch_size: Any, color: Any
) -> NodeResult:
    """A batch of solid-colour images; `color` is 0xRRGGBB."""
    rgb = int(color)
    pixel = np.array([(rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF], dtype=np.float32) / 255.0
    batch = np.empty((int(batch_size), int(height), int(width), 3), dtype=np.float32)
    batch[...] = pixel
    return NodeResult((batch,))


def load_image(ctx: NodeContext, image: Any) -> NodeResult:
    """An input file (`sub/name` or `name [temp]`) → IMAGE batch (one per frame) and MASK."""
    path = resolve_annotated(ctx.dirs, str(image))
    frames: list[Image.Image] = []
    masks: list[np.ndarray] = []
    with Image.open(path) as opened:
        for raw in ImageSequence.Iterator(opened):
            frame = ImageOps.exif_transpose(raw) or raw
            if frames and frame.size != frames[0].size:
                continue
            frames.append(frame.convert("RGB"))
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - alpha)
            else:
                masks.append(np.zeros((64, 64), dtype=np.float32))
    if any(m.shape != masks[0].shape for m in masks):
        masks = [np.zeros((64, 64), dtype=np.float32) for _ in masks]
    return NodeResult((from_pil(frames), np.stack(masks)))


def image_invert(ctx: NodeContext, image: Any) -> NodeResult:
    """1 - image."""
    return NodeResult((1.0 - image,))


def image_scale(
    ctx: NodeContext, image: Any, upscale_method: Any, width: Any, height: Any, crop: Any
) -> NodeResult:
    """Resize a batch; a 0 side keeps the aspect ratio, `crop=center` crops to the new ratio."""
    width, height = int(width), int(height)
    src_h, src_w = image.shape[1], image.shape[2]
    if width == 0 and height == 0:
        return NodeResult((image,))
    if width == 0:
        width = max(1, round(src_w * height / src_h))
    elif height == 0:
        height = max(1, round(src_h * width / src_w))
    resample = _RESAMPLE[str(upscale_method)]
    box = _center_box(src_w, src_h, width, height) if crop == "center" else None
    frames = [to_pil(f).resize((width, height), resample, box=box) for f in image]
    return NodeResult((from_pil(frames),))


def _center_box(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The centred source rectangle with the target's aspect ratio."""
    if src_w / src_h > width / height:
        crop_w = round(src_h * width / height)
        left = (src_w - crop_w) // 2
        return (left, 0, left + crop_w, src_h)
    crop_h = round(src_w * height / width)
    top = (src_h - crop_h) // 2
    return (0, top, src_w, top + crop_h)


def image_blur(ctx: NodeContext, image: Any, blur_radius: Any, sigma: Any) -> NodeResult:
    """Gaussian blur with standard deviation `sigma` (Pillow's kernel, not a 2r+1 one)."""
    if int(blur_radius) == 0:
        return NodeResult((image,))
    blur = ImageFilter.GaussianBlur(radius=float(sigma))
    return NodeResult((from_pil([to_pil(f).filter(blur) for f in image]),))


class SaveOutsideOutputError(Exception):
    """A filename_prefix that would write outside the output directory."""


def _save_batch(
    ctx: NodeContext, images: Any, base: Path, prefix: str, folder_type: str
) -> dict[str, Any]:
    """Write each frame as `{name}_{counter:05}_.png` under `base`; the UI dict lists them."""
    # Inline, not _save_folder: the error's traceback has as many frames as ComfyUI's.
    subfolder, name = os.path.split(os.path.normpath(prefix))
    folder = (base / subfolder).resolve()
    if os.path.commonpath([base, folder]) != str(base):
        raise SaveOutsideOutputError(
            "Saving image outside the output folder is not allowed.\n"
            f" full_output_folder: {folder}\n output_dir: {base}\n"
            f" commonpath: {os.path.commonpath([base, folder])}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    counter = _next_counter(folder, name)
    saved = []
    for batch_number, frame in enumerate(images):
        filename = f"{name.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        to_pil(frame).save(folder / filename, pnginfo=_png_info(ctx), compress_level=4)
        sub = "" if subfolder in ("", ".") else Path(subfolder).as_posix()
        saved.append({"filename": filename, "subfolder": sub, "type": folder_type})
        counter += 1
    return {"images": saved}


def _save_folder(base: Path, prefix: str) -> tuple[Path, str, str]:
    """(the folder, its subfolder as given, the file name stem) of a `filename_prefix`, made;
    SaveOutsideOutputError when it leaves `base`."""
    subfolder, name = os.path.split(os.path.normpath(prefix))
    folder = (base / subfolder).resolve()
    if os.path.commonpath([base, folder]) != str(base):
        raise SaveOutsideOutputError(
            "Saving image outside the output folder is not allowed.\n"
            f" full_output_folder: {folder}\n output_dir: {base}\n"
            f" commonpath: {os.path.commonpath([base, folder])}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder, subfolder, name


def _next_counter(folder: Path, name: str) -> int:
    """One past the highest counter already used for `name` in `folder`."""
    pattern = re.compile(re.escape(name) + r"_(\d+)_?\.")
    used = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return max(used, default=0) + 1


def _png_info(ctx: NodeContext) -> PngInfo:
    """The workflow in PNG text chunks, so a saved file can be dragged back into ComfyUI."""
    info = PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        info.add_text(str(key), json.dumps(value))
    return info


def save_image(ctx: NodeContext, images: Any, filename_prefix: Any = "ComfyUI") -> NodeResult:
    """Write PNGs to the output directory."""
    ui = _save_batch(ctx, images, ctx.dirs.output, str(filename_prefix), "output")
    return NodeResult((), ui)


def preview_image(ctx: NodeContext, images: Any) -> NodeResult:
    """Write PNGs to the temp directory under a random prefix."""
    tag = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
    ui = _save_batch(ctx, images, ctx.dirs.temp, f"ComfyUI_temp_{tag}", "temp")
    return NodeResult((), ui)


_WEBP_METHODS = {"fastest": 0, "default": 4, "slowest": 6}


def save_animated_webp(
    ctx: NodeContext,
    images: Any,
    filename_prefix: Any = "ComfyUI",
    fps: Any = 6.0,
    lossless: Any = True,
    quality: Any = 80,
    method: Any = "default",
) -> NodeResult:
    """The whole batch as the frames of one WEBP; `animated` says whether it has several."""
    folder, subfolder, name = _save_folder(ctx.dirs.output, str(filename_prefix))
    filename = f"{name}_{_next_counter(folder, name):05}_.webp"
    first, *rest = [to_pil(frame) for frame in images]
    first.save(
        folder / filename,
        save_all=True,
        append_images=rest,
        duration=round(1000.0 / float(fps)),
        lossless=bool(lossless),
        quality=int(quality),
        method=_WEBP_METHODS[str(method)],
    )
    sub = "" if subfolder in ("", ".") else Path(subfolder).as_posix()
    saved = [{"filename": filename, "subfolder": sub, "type": "output"}]
    # ComfyUI's shape: a per-node list of flags beside the `images` it describes.
    return NodeResult((), {"images": saved, "animated": [bool(rest)]})


NodeFunction = Callable[..., NodeResult]

NODE_FUNCTIONS: dict[str, NodeFunction] = {
    "EmptyImage": empty_image,
    "LoadImage": load_image,
    "ImageInvert": image_invert,
    "ImageScale": image_scale,
    "ImageBlur": image_blur,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveAnimatedWEBP": save_animated_webp,
}
