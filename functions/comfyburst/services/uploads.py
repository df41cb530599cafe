"""Uploads of a caller's own model files: `POST /uploads` hands out one resumable upload
session for a sha256 and size, or says the file is already there.

The session is created here, with the API's own credentials (the caller needs none): a
Cloud Storage resumable session URI, bound to one object name and the declared size, that
needs no further authentication to send bytes to, and only creates the object if it is absent.
Where the rules live: `comfyburst.domain.uploads`.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from comfyburst.domain import uploads as rules
from comfyburst.domain.json_safety import parse_json_body
from comfyburst.errors import Forbidden, InvalidJson

MAX_UPLOAD_BODY_BYTES = 4096


class ModelUploads(Protocol):
    """Objects of the models bucket as uploads need them (adapters/gcs_uploads.py)."""

    def stored(self, bucket: str, name: str) -> tuple[int, str | None] | None:
        """The object's size and base64 MD5 (None for composite objects); None when absent."""
        ...

    def start_session(self, bucket: str, name: str, size_bytes: int) -> str:
        """A resumable upload session URI for a new object of exactly `size_bytes`."""
        ...

    def delete(self, bucket: str, name: str) -> None: ...


class UploadRequestBody(BaseModel):
    """What `POST /uploads` takes (documented; parsed by `domain.uploads`)."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the file, hex")
    size_bytes: int = Field(ge=1, description="The file's size in bytes")
    md5_b64: str | None = Field(
        default=None,
        min_length=24,
        max_length=24,
        description="Base64 MD5 of the file: a stored object of the right size but other "
        "MD5 is replaced instead of reported as existing",
    )


class UploadAnswer(BaseModel):
    """Where the file is (`url`, for the job's model spec) and, unless it exists, where to
    send it."""

    exists: bool = Field(description="The models bucket holds this file already: send nothing")
    url: str = Field(description="The gs:// URL a job's model spec names (with sha256, size)")
    sha256: str
    size_bytes: int
    session_url: str | None = Field(
        default=None,
        description="Resumable upload session: PUT the bytes (Content-Range chunks of a "
        "multiple of 256 KiB); null when exists",
    )


def start_upload(
    uploads: ModelUploads,
    settings: Any,
    body: bytes,
    *,
    caller: str | None,
    admins: frozenset[str],
) -> UploadAnswer:
    """Check the caller and the request; answer `exists`, else a fresh upload session.
    The deployment has a models bucket (the route checks)."""
    bucket: str = settings.models_bucket
    if not rules.may_upload(caller, settings.model_upload_principals, admins):
        raise Forbidden("this caller may not upload models (model_upload_principals)")
    assert caller is not None  # may_upload refuses a missing caller
    if len(body) > MAX_UPLOAD_BODY_BYTES:
        raise InvalidJson(f"the request body is larger than {MAX_UPLOAD_BODY_BYTES} bytes")
    data = parse_json_body(body)
    request = rules.parse_upload_request(data, max_size_bytes=settings.max_model_upload_bytes)
    name = rules.object_name(caller, request.sha256)
    answer = UploadAnswer(
        exists=False,
        url=rules.upload_url(bucket, caller, request.sha256),
        sha256=request.sha256,
        size_bytes=request.size_bytes,
    )
    stored = uploads.stored(bucket, name)
    if stored is not None and rules.holds_the_file(request, *stored):
        return answer.model_copy(update={"exists": True})
    if stored is not None:
        # The caller's own object, cut short or of other bytes: sessions only create absent
        # objects, so it goes before a new one can be sent.
        uploads.delete(bucket, name)
    session = uploads.start_session(bucket, name, request.size_bytes)
    return answer.model_copy(update={"session_url": session})


def stored_sizes(uploads: ModelUploads | None, bucket: str | None) -> Any:
    """The size lookup submit's check uses (`domain.uploads.check_uploaded_models`)."""

    def size(name: str) -> int | None:
        if uploads is None or not bucket:
            return None
        stored = uploads.stored(bucket, name)
        return None if stored is None else stored[0]

    return size
