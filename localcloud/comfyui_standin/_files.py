"""`GET /view` and `POST /upload/image` of the ComfyUI stand-in."""

from __future__ import annotations

import io
import mimetypes
import os
from pathlib import Path

from aiohttp import web
from PIL import Image

from ._paths import FOLDER_TYPES, Dirs, UnsafePathError, inside, split_annotated
from ._state import STANDIN_KEY

_PREVIEW_FORMATS = {"webp": "image/webp", "jpeg": "image/jpeg", "jpg": "image/jpeg"}


def _empty(status: int) -> web.Response:
    return web.Response(status=status)


async def view(request: web.Request) -> web.Response:
    """Serve a file of the input/output/temp area; 404 when missing, 400 on `..`."""
    dirs: Dirs = request.app[STANDIN_KEY].dirs
    query = request.query
    filename, folder_type = split_annotated(query.get("filename", ""), query.get("type", "output"))
    if not filename or filename.startswith("/") or ".." in filename:
        return _empty(400)
    if folder_type not in FOLDER_TYPES:
        return _empty(400)
    try:
        path = inside(dirs.area(folder_type), query.get("subfolder", ""), filename)
    except UnsafePathError:
        return _empty(403)
    if not path.is_file():
        return _empty(404)
    headers = {"Content-Disposition": f'filename="{path.name}"'}
    preview, channel = query.get("preview"), query.get("channel", "rgba")
    if preview or channel != "rgba":
        body, content_type = _transcode(path, preview, channel)
    else:
        body = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.Response(body=body, content_type=content_type, headers=headers)


def _transcode(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    """Re-encode for `preview=fmt;quality` and/or `channel=rgb|a`."""
    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        alpha = image.getchannel("A")
        image = Image.merge("RGBA", (alpha, alpha, alpha, alpha))
    fmt, quality = "png", 90
    if preview:
        name, _, q = preview.partition(";")
        if name in _PREVIEW_FORMATS:
            fmt, quality = name, int(q) if q.isdigit() else 90
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG")
        return buffer.getvalue(), "image/png"
    if fmt != "webp":
        image = image.convert("RGB")
    image.save(buffer, "WEBP" if fmt == "webp" else "JPEG", quality=quality)
    return buffer.getvalue(), _PREVIEW_FORMATS[fmt]


async def upload_image(request: web.Request) -> web.Response:
    """Store a multipart `image`; identical content is reused, a clash becomes `name (1).ext`."""
    dirs: Dirs = request.app[STANDIN_KEY].dirs
    form = await request.post()
    image = form.get("image")
    if not isinstance(image, web.FileField) or not image.filename:
        return _empty(400)
    folder_type = str(form.get("type") or "input")
    subfolder = str(form.get("subfolder") or "")
    overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
    if folder_type not in FOLDER_TYPES:
        return _empty(400)
    try:
        folder = inside(dirs.area(folder_type), subfolder)
    except UnsafePathError:
        return _empty(400)
    data = image.file.read()
    name = _store(folder, os.path.basename(image.filename), data, overwrite)
    return web.json_response({"name": name, "subfolder": subfolder, "type": folder_type})


def _store(folder: Path, name: str, data: bytes, overwrite: bool) -> str:
    """Write `data` and return the name used."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = os.path.splitext(name)
    candidate, attempt = name, 0
    while not overwrite and (folder / candidate).exists():
        if (folder / candidate).read_bytes() == data:
            return candidate
        attempt += 1
        candidate = f"{stem} ({attempt}){suffix}"
    (folder / candidate).write_bytes(data)
    return candidate
