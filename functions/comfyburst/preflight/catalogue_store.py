"""The deployment's node catalogue, read from the jobs bucket and cached by generation.

The image build uploads the baked image's `/object_info` to `catalogue/object_info.json` in the
jobs bucket. A CatalogueStore serves the parsed Catalogue, asks for the object's generation at
most every `check_interval_s`, re-reads it only when the generation changed, and falls back to
the catalogue checked in with this package while there is no (valid) blob.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from comfyburst.preflight._catalogue import Catalogue, CatalogueError

CATALOGUE_BLOB_NAME = "catalogue/object_info.json"
DEFAULT_CHECK_INTERVAL_S = 60.0

logger = logging.getLogger(__name__)


class CatalogueBlobReader(Protocol):
    """The two reads the store needs from Cloud Storage."""

    def read_bytes(self, bucket: str, name: str) -> bytes | None: ...

    def generation(self, bucket: str, name: str) -> int | None: ...


class CatalogueStore:
    """Cached Catalogue from a blob; `get(now)` is cheap between checks."""

    def __init__(
        self,
        reader: CatalogueBlobReader,
        bucket: str,
        *,
        name: str = CATALOGUE_BLOB_NAME,
        check_interval_s: float = DEFAULT_CHECK_INTERVAL_S,
        default: Callable[[], Catalogue] = Catalogue.load_default,
    ) -> None:
        self._reader = reader
        self._bucket = bucket
        self._name = name
        self._check_interval_s = check_interval_s
        self._default = default
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._catalogue: Catalogue | None = None  # from the blob
        self._generation: int | None = None  # of the blob `_catalogue` came from
        self._rejected_generation: int | None = None  # a blob that did not parse

    @property
    def generation(self) -> int | None:
        """The blob generation being served; None while serving the default catalogue."""
        return self._generation if self._catalogue is not None else None

    def get(self, now: float) -> Catalogue:
        """The current catalogue; `now` is a monotonic time in seconds."""
        with self._lock:
            due = self._checked_at is None or now - self._checked_at >= self._check_interval_s
            if due:
                self._checked_at = now
                self._refresh()
            return self._catalogue if self._catalogue is not None else self._default()

    def _refresh(self) -> None:
        try:
            generation = self._reader.generation(self._bucket, self._name)
        except Exception:  # storage outages must not stop validation; keep what we have
            logger.warning("catalogue generation check failed; keeping current", exc_info=True)
            return
        if generation is None:
            self._catalogue, self._generation = None, None
            return
        if generation in (self._generation, self._rejected_generation):
            return
        try:
            data = self._reader.read_bytes(self._bucket, self._name)
        except Exception:  # as above: a failed read is retried at the next check
            logger.warning("catalogue read failed; keeping current", exc_info=True)
            return
        if data is None:  # deleted between the two calls
            self._catalogue, self._generation = None, None
            return
        try:
            catalogue = Catalogue.from_json_bytes(data)
        except CatalogueError:
            logger.error("catalogue blob generation %s is invalid; ignoring it", generation)
            self._rejected_generation = generation
            return
        self._catalogue, self._generation = catalogue, generation
