"""Model uploads: where a caller's own model file lives in the models bucket, and what a job
naming one must match. Pure rules, no I/O.

An upload is addressed by its content and its owner: `uploads/{owner}/sha256/{hex}`, where
`owner` is the first 32 hex digits of the sha256 of the caller's principal. A caller can only
ever be handed a session for, and only run jobs naming, objects under its own `owner`, so
another caller can neither read (use in a job) nor replace the bytes of someone else's upload,
nor learn from `exists` whether someone else has a file. The address names the content: the
worker hashes what it downloads and refuses bytes that are not `{hex}`
(`comfyburst_worker.model_cache`), so even bytes replaced behind the API's back never load.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from comfyburst.domain.gs_urls import SCHEME, parse_gs_url
from comfyburst.domain.urls import UrlRefused
from comfyburst.errors import Forbidden, InvalidRequest, UploadInvalid
from comfyburst.schema import JobRequest, ModelSpec

UPLOADS_PREFIX = "uploads"
OWNER_HEX_CHARS = 32
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_OBJECT = re.compile(
    rf"^{UPLOADS_PREFIX}/(?P<owner>[0-9a-f]{{32}})/sha256/(?P<sha256>[0-9a-f]{{64}})$"
)


@dataclass(frozen=True)
class UploadRequest:
    """`POST /uploads`: the sha256 and size of the file a caller wants to bring."""

    sha256: str
    size_bytes: int
    md5_b64: str | None = None  # base64 MD5, as Cloud Storage keeps it (`md5Hash`)


def owner_key(caller: str) -> str:
    """The folder of one caller's uploads: no principal text ever reaches an object name."""
    return hashlib.sha256(caller.encode()).hexdigest()[:OWNER_HEX_CHARS]


def object_name(caller: str, sha256: str) -> str:
    return f"{UPLOADS_PREFIX}/{owner_key(caller)}/sha256/{sha256}"


def may_upload(caller: str | None, allowed: Iterable[str], admins: Iterable[str]) -> bool:
    """Only a known caller that the deployment lists (or an admin) gets upload sessions; `*`
    lists every authenticated caller."""
    if not caller:
        return False
    listed = {entry.strip() for entry in allowed if entry.strip()}
    return caller in listed or "*" in listed or caller in set(admins)


def parse_upload_request(data: Any, *, max_size_bytes: int) -> UploadRequest:
    """The body of `POST /uploads`, or InvalidRequest naming the field."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = sorted(set(data) - {"sha256", "size_bytes", "md5_b64"})
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]}", field=unknown[0])
    sha256 = data.get("sha256")
    if not isinstance(sha256, str) or not _HEX64.match(sha256.lower()):
        raise InvalidRequest("sha256 must be 64 hexadecimal characters", field="sha256")
    size = data.get("size_bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidRequest("size_bytes must be a positive integer", field="size_bytes")
    if size > max_size_bytes:
        raise InvalidRequest(
            f"size_bytes is {size}; at most {max_size_bytes} bytes may be uploaded",
            field="size_bytes",
        )
    md5 = data.get("md5_b64")
    if md5 is not None and not _is_md5_b64(md5):
        raise InvalidRequest("md5_b64 must be the base64 of a 16-byte MD5", field="md5_b64")
    return UploadRequest(sha256.lower(), size, md5)


def _is_md5_b64(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 24:
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def holds_the_file(
    request: UploadRequest, stored_size_bytes: int | None, stored_md5_b64: str | None
) -> bool:
    """Whether the stored object is the file asked about, as far as storage can tell: its
    size, and its MD5 where both sides know it (a file changed while it was sent, or a cut
    upload, is then replaced; the worker's sha256 check refuses whatever slips through)."""
    if stored_size_bytes != request.size_bytes:
        return False
    return request.md5_b64 is None or stored_md5_b64 in (None, request.md5_b64)


def upload_url(bucket: str, caller: str, sha256: str) -> str:
    """The `url` a job's model spec names for this upload."""
    return f"gs://{bucket}/{object_name(caller, sha256)}"


def uploaded_models(request: JobRequest, bucket: str | None) -> list[tuple[int, ModelSpec, str]]:
    """(index, spec, object name) of every model the request brings from the uploads folder.
    A gs:// URL not spelt canonically (`domain/gs_urls.py`) is refused here too, so no other
    spelling of an upload's object slips past the owner check."""
    if not bucket:
        return []
    found = []
    for index, spec in enumerate(request.models):
        if not spec.url.startswith(SCHEME):
            continue
        try:
            target = parse_gs_url(spec.url)
        except UrlRefused as exc:
            raise InvalidRequest(f"model URL {exc}", field=f"models.{index}.url") from None
        if target.bucket == bucket and target.name.startswith(f"{UPLOADS_PREFIX}/"):
            found.append((index, spec, target.name))
    return found


def check_uploaded_models(
    request: JobRequest,
    bucket: str | None,
    caller: str | None,
    stored_size_bytes: Callable[[str], int | None],
) -> None:
    """Refuse a job naming an upload that is not the caller's own, whose address and declared
    sha256 differ, that is missing, or whose stored size differs from the declared one."""
    for index, spec, name in uploaded_models(request, bucket):
        field = f"models.{index}"
        match = _OBJECT.match(name)
        if match is None:
            raise UploadInvalid(
                "an uploaded model's URL must be gs://BUCKET/uploads/OWNER/sha256/HEX",
                field=f"{field}.url",
            )
        if caller is None or match["owner"] != owner_key(caller):
            raise Forbidden(
                "an uploaded model may only be used by its uploader", field=f"{field}.url"
            )
        if spec.sha256 != match["sha256"]:
            raise UploadInvalid(
                "an uploaded model's sha256 must be the one its URL names", field=f"{field}.sha256"
            )
        if spec.size_bytes is None:
            raise UploadInvalid(
                "an uploaded model needs its size_bytes", field=f"{field}.size_bytes"
            )
        stored = stored_size_bytes(name)
        if stored is None:
            raise UploadInvalid(
                f"uploaded model {spec.sha256} is missing: upload it first (POST /uploads)",
                field=f"{field}.url",
            )
        if stored != spec.size_bytes:
            raise UploadInvalid(
                f"uploaded model {spec.sha256} holds {stored} bytes, not {spec.size_bytes}",
                field=f"{field}.size_bytes",
            )
