"""Comfy API v2 assets a caller uploads: content-addressed blobs in the jobs bucket.

An upload is kept as two objects under the caller's own folder (`domain.uploads.owner_key`,
no principal text in a name): `v2-assets/<owner>/<blake3 hex>` (the bytes, written only if
absent) and `<that>.json` (its record: file_path, content_type, size, created_at), written
after the bytes, so an asset exists once its record does. Its id is `up-<blake3 hex>`,
resolved in the caller's folder only: another caller's id, hash or blob is the same 404 as
a missing one. The blake3 is computed from the bytes as the multipart parser receives them.
Same bytes, same asset: a second upload (or `from-hash`) answers the first one's record
(`created_new: false`). Nothing under the prefix expires (no lifecycle rule matches it).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import flask
from blake3 import blake3
from pydantic import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from comfyburst.api._v2_errors import V2Error
from comfyburst.api._v2_models import V2Asset, V2FromHashBody
from comfyburst.domain.json_safety import parse_json_body
from comfyburst.domain.uploads import owner_key
from comfyburst.errors import InvalidRequest, NotFound, PayloadTooLarge, PreconditionFailed
from comfyburst.schema import check_relative_path, is_plain_file_value

PREFIX = "v2-assets"
ID_PREFIX = "up-"
URL_TTL_S = 3600
MAX_FROM_HASH_BODY_BYTES = 4096
# Multipart framing and the small text fields around the file.
_FORM_OVERHEAD_BYTES = 64 * 1024
_HEX = re.compile(r"^[0-9a-f]{64}$")
_HASH = re.compile(r"^blake3:(?P<hex>[0-9a-f]{64})$")
_UPLOAD_FIELDS = frozenset({"content_type", "file_path", "expected_hash", "tags"})


@dataclass(frozen=True)
class StoredAsset:
    """One caller's uploaded asset: its record and where its bytes are."""

    hex: str
    file_path: str
    content_type: str
    size_bytes: int
    created_at: datetime

    @property
    def id(self) -> str:
        return ID_PREFIX + self.hex


def blob_name(caller: str | None, hex_digest: str) -> str:
    return f"{PREFIX}/{owner_key(caller or '')}/{hex_digest}"


def hex_of_id(asset_id: str) -> str | None:
    """The blake3 hex of an upload's id; None for any other id."""
    if not asset_id.startswith(ID_PREFIX):
        return None
    rest = asset_id[len(ID_PREFIX) :]
    return rest if _HEX.match(rest) else None


def find(api: Any, caller: str | None, hex_digest: str) -> StoredAsset | None:
    """The caller's asset of these bytes, or None (missing, or another caller's)."""
    raw = api.blobs.read(api.settings.jobs_bucket, blob_name(caller, hex_digest) + ".json")
    if raw is None:
        return None
    record = json.loads(raw)
    return StoredAsset(
        hex=hex_digest,
        file_path=record["file_path"],
        content_type=record["content_type"],
        size_bytes=record["size_bytes"],
        created_at=datetime.fromisoformat(record["created_at"]),
    )


def read_bytes(api: Any, caller: str | None, asset: StoredAsset) -> bytes:
    data = api.blobs.read(api.settings.jobs_bucket, blob_name(caller, asset.hex))
    if data is None:  # deleted between its record's read and now
        raise NotFound("asset not found")
    return bytes(data)


def body(api: Any, caller: str | None, asset: StoredAsset, *, created_new: bool | None) -> Any:
    """The v2 `Asset` of an upload, with a freshly signed URL of its bytes."""
    url = api.signer.sign_get(api.settings.jobs_bucket, blob_name(caller, asset.hex), URL_TTL_S)
    return V2Asset(
        id=asset.id,
        hash="blake3:" + asset.hex,
        size_bytes=asset.size_bytes,
        content_type=asset.content_type,
        file_path=asset.file_path,
        created_new=created_new,
        created_at=asset.created_at,
        url=url,
        url_expires_at=api.clock.now() + timedelta(seconds=URL_TTL_S),
        expires_at=None,
        job_id=None,
    ).model_dump(mode="json")


def max_upload_bytes(settings: Any) -> int:
    """The largest file worth keeping: no job takes more input bytes than this."""
    return int(settings.max_input_bytes)


class _HashingBuffer(io.BytesIO):
    """Where the parser writes the file part: hashed as it arrives, bounded."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.hasher = blake3()
        self._limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self._limit:
            raise PayloadTooLarge(f"the file is larger than {self._limit} bytes")
        self.hasher.update(data)
        return super().write(data)


def upload(request: flask.Request, api: Any, caller: str | None) -> flask.Response:
    """`POST /api/v2/assets`: keep the file part's bytes; 201 new, 200 already held."""
    limit = max_upload_bytes(api.settings)
    if request.mimetype != "multipart/form-data":
        # The published contract's answer for a validation failure here (it documents no 415).
        raise V2Error("invalid_request", 422, "send the file as multipart/form-data")
    if request.content_length is None:
        raise V2Error("length_required", 411, "a Content-Length is required")
    if request.content_length > limit + _FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"the request is larger than {limit} bytes and its form")
    buffers: list[_HashingBuffer] = []

    def stream_factory(*_args: Any, **_kw: Any) -> _HashingBuffer:
        buffers.append(_HashingBuffer(limit))
        return buffers[-1]

    try:
        parser = FormDataParser(
            stream_factory=stream_factory,
            max_content_length=limit + _FORM_OVERHEAD_BYTES,
            max_form_memory_size=_FORM_OVERHEAD_BYTES,
        )
        # Flask's own stream, so the framework's later read of the body finds it consumed.
        _stream, form, files = parser.parse(
            request.stream, request.mimetype, request.content_length, request.mimetype_params
        )
    except RequestEntityTooLarge:
        raise PayloadTooLarge(f"the request is larger than {limit} bytes and its form") from None
    request.environ["comfyburst.body_read"] = True  # as _routes._read_body marks it: read whole
    # A part's name may fail to decode (werkzeug gives None): unknown too.
    unknown = sorted(str(name) for name in set(form) - _UPLOAD_FIELDS)
    if unknown or set(files) != {"file"} or len(files.getlist("file")) != 1:
        field = unknown[0][:100] if unknown else "file"
        raise V2Error("invalid_request", 422, "the form takes one `file` part and "
                      "content_type, file_path, expected_hash, tags", field=field)  # fmt: skip
    part = files["file"]
    buffer = part.stream
    assert isinstance(buffer, _HashingBuffer)
    file_path = _file_path(form.get("file_path") or part.filename or "upload.bin")
    content_type = _content_type(form.get("content_type") or part.mimetype)
    hex_digest = buffer.hasher.hexdigest()
    expected = form.get("expected_hash")
    if expected is not None:
        found = _HASH.match(expected)
        if found is None:
            raise V2Error("invalid_request", 422, "expected_hash is `blake3:<64 hex>`",
                          field="expected_hash")  # fmt: skip
        if found["hex"] != hex_digest:
            raise V2Error("hash_mismatch", 409, "the bytes received do not have expected_hash",
                          details={"hash": "blake3:" + hex_digest})  # fmt: skip
    data = buffer.getvalue()
    asset, created = _keep(api, caller, hex_digest, data, file_path, content_type)
    return _answer(201 if created else 200, body(api, caller, asset, created_new=created))


def _keep(
    api: Any, caller: str | None, hex_digest: str, data: bytes, file_path: str, content_type: str
) -> tuple[StoredAsset, bool]:
    """Write the bytes, then the record, each only if absent; (the asset, whether new)."""
    bucket, name = api.settings.jobs_bucket, blob_name(caller, hex_digest)
    # Already there: the same bytes (the name is their hash), kept before.
    with contextlib.suppress(PreconditionFailed):
        api.blobs.write(bucket, name, data, content_type, if_generation_match=0)
    asset = StoredAsset(hex_digest, file_path, content_type, len(data), api.clock.now())
    record = {
        "file_path": file_path,
        "content_type": content_type,
        "size_bytes": len(data),
        "created_at": asset.created_at.isoformat(),
    }
    try:
        api.blobs.write(bucket, name + ".json", json.dumps(record).encode(),
                        "application/json", if_generation_match=0)  # fmt: skip
    except PreconditionFailed:
        held = find(api, caller, hex_digest)
        if held is not None:
            return held, False
        raise
    return asset, True


def from_hash(request_body: bytes, api: Any, caller: str | None) -> flask.Response:
    """`POST /api/v2/assets/from-hash`: the caller's asset of bytes it uploaded before."""
    if len(request_body) > MAX_FROM_HASH_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_FROM_HASH_BODY_BYTES} bytes")
    try:
        parsed = V2FromHashBody.model_validate(parse_json_body(request_body))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"{field or 'body'}: {first['msg']}"[:300], field=field) from None
    asset = find(api, caller, parsed.hash.removeprefix("blake3:"))
    if asset is None:
        raise V2Error("blob_not_found", 404, "no blob with this hash: upload the bytes")
    return _answer(200, body(api, caller, asset, created_new=False))


def by_hash(api: Any, caller: str | None, value: str) -> flask.Response:
    """`HEAD /api/v2/assets/by-hash/{hash}`: 200 when the caller holds the bytes, else 404."""
    found = _HASH.match(value)
    if found is None or find(api, caller, found["hex"]) is None:
        return flask.Response(status=404)
    return flask.Response(status=200)


def delete(api: Any, caller: str | None, hex_digest: str) -> flask.Response:
    """`DELETE /api/v2/assets/{id}`: the record first (the asset is gone), then the bytes."""
    if find(api, caller, hex_digest) is None:
        raise NotFound("asset not found")
    name = blob_name(caller, hex_digest)
    api.blobs.delete(api.settings.jobs_bucket, name + ".json")
    api.blobs.delete(api.settings.jobs_bucket, name)
    return flask.Response(status=204)


def _file_path(value: str) -> str:
    try:
        value = check_relative_path(value, allow_subdirs=False)
    except ValueError as exc:
        raise V2Error("invalid_request", 422, f"file_path {exc}", field="file_path") from None
    if not is_plain_file_value(value) or len(value) > 200:
        raise V2Error("invalid_request", 422, "file_path must be a plain file name",
                      field="file_path")  # fmt: skip
    return value


def _content_type(value: str) -> str:
    if len(value) > 255 or "/" not in value or any(c in value for c in "\r\n\0"):
        raise V2Error("invalid_request", 422, "content_type is not a media type",
                      field="content_type")  # fmt: skip
    return value


def _answer(status_code: int, data: Any) -> flask.Response:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return flask.Response(text, status_code, mimetype="application/json")
