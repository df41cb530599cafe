"""ModelUploads over google-cloud-storage: one storage call per method.

The session comes from `Blob.create_resumable_upload_session` (JSON API, `uploadType=
resumable`), made with the API's own credentials: the session URI it returns authorizes the
upload by itself, for this object only, and `if_generation_match=0` makes it create the
object only when absent, so a session can never replace bytes that are already there.
"""

from __future__ import annotations

import contextlib
from typing import Any

from google.api_core import exceptions as gexc

CONTENT_TYPE = "application/octet-stream"


class GcsModelUploads:
    def __init__(self, client: Any) -> None:
        self._client = client

    def stored(self, bucket: str, name: str) -> tuple[int, str | None] | None:
        blob = self._client.bucket(bucket).get_blob(name)
        if blob is None or blob.size is None:
            return None
        return int(blob.size), blob.md5_hash

    def start_session(self, bucket: str, name: str, size_bytes: int) -> str:
        blob = self._client.bucket(bucket).blob(name)
        url: str = blob.create_resumable_upload_session(
            content_type=CONTENT_TYPE, size=size_bytes, if_generation_match=0
        )
        return url

    def delete(self, bucket: str, name: str) -> None:
        with contextlib.suppress(gexc.NotFound):  # already gone is what the caller wanted
            self._client.bucket(bucket).blob(name).delete()
