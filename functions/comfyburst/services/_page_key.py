"""The key the API signs its page tokens with (`services/job_list.py`).

No setting holds a secret every deployment has (the webhook secret exists only with webhooks,
API keys only in `api_key` mode), so the key is the deployment's own: 32 random bytes in the
jobs bucket at `KEY_OBJECT`, outside the `jobs/` prefix its lifecycle rule deletes. The first
instance that lists a page makes it, create-only, so instances racing to make it all end with
the one that was stored; each process reads it once. It never reaches VM metadata or a log.
A new key (the object deleted) only makes the page tokens already handed out invalid (400).
"""

from __future__ import annotations

import contextlib
import secrets
import threading

from comfyburst.errors import PreconditionFailed
from comfyburst.ports import BlobStore

KEY_OBJECT = "keys/page-token.key"
KEY_BYTES = 32
MIN_KEY_BYTES = 16


class PageTokenKey:
    """The key, made on first use and read once per process."""

    def __init__(self, blobs: BlobStore, bucket: str, name: str = KEY_OBJECT) -> None:
        self._blobs, self._bucket, self._name = blobs, bucket, name
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._load()
            return self._key

    def _load(self) -> bytes:
        stored = self._blobs.read(self._bucket, self._name)
        if stored is None:
            # Create-only: when another instance made it first, its key is the deployment's.
            with contextlib.suppress(PreconditionFailed):
                self._blobs.write(
                    self._bucket, self._name, secrets.token_bytes(KEY_BYTES), if_generation_match=0
                )
            stored = self._blobs.read(self._bucket, self._name)
        if stored is None or len(stored) < MIN_KEY_BYTES:
            raise RuntimeError(f"gs://{self._bucket}/{self._name} holds no page-token key")
        return stored
