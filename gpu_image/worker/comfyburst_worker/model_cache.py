"""The worker's model store: no job can change the bytes another job loads, by construction.

Layout under the store's root (no name in it is chosen by a job):

- `sha256/{hex}`: model files, content-addressed, read-only once in place. A file gets there
  only by being hashed on its way in, so its name is its content.
- `urls/{key}.json`: `{"sha256", "size"}`: what one exact URL served. `key` is the sha256 of
  the whole URL, query included (on Civitai the query picks the file variant), so the URL and
  any `?token=` in it never reach the disk, and a caller's token never unlocks another caller's
  hit. A hit needs this record: a declared sha256 alone never reaches another job's file.
- `partial/{key}`: a download in progress, tied to its exact URL by name; removed when the
  download fails, and the folder is emptied when the agent starts.

A miss tries the models bucket's mirror (the same two kinds of object, `models/sha256/{hex}`
and `models/urls/{key}.json`), then the URL itself (https / allowed http / allowed gs://),
verifies size and sha256, installs, and mirrors in the background. The mirror only ever gets
content this worker hashed itself, under that hash. ComfyUI sees a job's models through the
job's view (`model_view.JobModelView`), never this folder; pre-baked models live in ComfyUI's
own models folder, which the worker never writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from comfyburst.domain.gs_urls import is_mirror, parse_gs_url
from comfyburst.domain.urls import UrlRefused
from comfyburst.ports import BlobStore
from comfyburst.schema import ModelSpec
from comfyburst_worker._download import (
    Cancel,
    DownloadCancelled,
    DownloadError,
    HttpDownloader,
    hash_file,
)
from comfyburst_worker.errors import ModelFetchError

log = logging.getLogger(__name__)

STORE_DIR, INDEX_DIR, PARTIAL_DIR = "sha256", "urls", "partial"
DEFAULT_MAX_MODEL_BYTES = 64 * 1024**3


def url_key(url: str) -> str:
    """The cache key of a model URL: sha256 of the URL as given, query included (fragment
    dropped: it never reaches the server)."""
    return hashlib.sha256(url.split("#", 1)[0].encode()).hexdigest()


@dataclass(frozen=True)
class Record:
    """What one URL served: its content's sha256 and size."""

    sha256: str
    size: int

    def to_json(self) -> bytes:
        return json.dumps({"sha256": self.sha256, "size": self.size}).encode()

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Record | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            sha256, size = str(data["sha256"]), int(data["size"])
        except (ValueError, KeyError, TypeError):
            return None
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256) or size < 0:
            return None
        return cls(sha256, size)

    def satisfies(self, spec: ModelSpec) -> bool:
        """The recorded content is what the spec asks for (when it says)."""
        if spec.size_bytes is not None and spec.size_bytes != self.size:
            return False
        return spec.sha256 is None or spec.sha256 == self.sha256


@dataclass(frozen=True)
class EnsureResult:
    key: str  # the spec's `{kind}/{filename}`
    blob: Path  # the content-addressed file the job's view links to
    cache_hit: bool
    source: str  # "cache", "mirror", "url"
    bytes_downloaded: int = 0


class ModelCache:
    """Ensures models in the store; one instance per agent, safe for parallel `ensure` calls."""

    def __init__(
        self,
        root: Path,
        downloader: HttpDownloader,
        blobs: BlobStore | None,
        models_bucket: str | None,
        gs_buckets: list[str],
        *,
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    ) -> None:
        self.root = root
        self.downloader = downloader
        self.blobs = blobs
        self.models_bucket = models_bucket
        self.gs_buckets = set(gs_buckets) | ({models_bucket} if models_bucket else set())
        self.max_model_bytes = max_model_bytes
        self._mirror_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mirror")
        self._mirrors: list[Future[None]] = []
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        for folder in (STORE_DIR, INDEX_DIR, PARTIAL_DIR):
            (root / folder).mkdir(parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        return self.root / STORE_DIR / sha256

    def record_of(self, spec: ModelSpec) -> Record | None:
        """The store's record of the spec's URL, if its content is in place and fits the spec."""
        try:
            raw = (self.root / INDEX_DIR / f"{url_key(spec.url)}.json").read_bytes()
        except OSError:
            return None
        record = Record.parse(raw)
        if record is None or not record.satisfies(spec):
            return None
        try:
            size = self.blob_path(record.sha256).stat().st_size
        except OSError:
            return None
        return record if size == record.size else None

    def is_cached(self, spec: ModelSpec) -> bool:
        """A stat and a small read, no hashing."""
        return self.record_of(spec) is not None

    def clear_partials(self) -> None:
        """Drop what interrupted downloads left (at agent start: nothing resumes a crash)."""
        partial = self.root / PARTIAL_DIR
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True, exist_ok=True)

    def ensure(self, spec: ModelSpec, cancel: Cancel | None = None) -> EnsureResult:
        """The spec's content is in the store when this returns; ModelFetchError otherwise."""
        key = url_key(spec.url)
        with self._lock_for(key):
            record = self.record_of(spec)
            if record is not None:
                return EnsureResult(spec.key, self.blob_path(record.sha256), True, "cache")
            tmp = self.root / PARTIAL_DIR / key
            try:
                return self._fetch(spec, key, tmp, cancel or Cancel())
            finally:
                tmp.unlink(missing_ok=True)

    def wait_for_mirrors(self) -> None:
        """Let background mirror uploads finish (before power-off)."""
        for future in self._mirrors:
            try:
                future.result()
            except Exception:
                log.exception("mirroring a model to the models bucket failed")
        self._mirrors.clear()

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _limit(self, spec: ModelSpec) -> int:
        return min(spec.size_bytes or self.max_model_bytes, self.max_model_bytes)

    def _fetch(self, spec: ModelSpec, key: str, tmp: Path, cancel: Cancel) -> EnsureResult:
        mirrored = self._from_mirror(spec, key, tmp)
        if mirrored is not None:
            blob = self._install(tmp, key, mirrored)
            return EnsureResult(spec.key, blob, False, "mirror", mirrored.size)
        # Never resume from what the mirror left: the download starts from its first byte.
        tmp.unlink(missing_ok=True)
        downloaded, sha256 = self._from_source(spec, tmp, cancel)
        record = self._verify(spec, tmp, sha256, _source_name(spec.url))
        blob = self._install(tmp, key, record)
        self._mirror(key, blob, record)
        return EnsureResult(spec.key, blob, False, "url", downloaded)

    def _from_mirror(self, spec: ModelSpec, key: str, tmp: Path) -> Record | None:
        if self.blobs is None or not self.models_bucket:
            return None
        bucket = self.models_bucket
        try:
            record = Record.parse(self.blobs.read(bucket, f"models/{INDEX_DIR}/{key}.json"))
            if record is None or not record.satisfies(spec) or record.size > self._limit(spec):
                return None
            name = f"models/{STORE_DIR}/{record.sha256}"
            if not self.blobs.download_file(bucket, name, str(tmp)):
                return None
        except Exception as exc:
            # The mirror is an optimisation; the source URL still works.
            log.warning("models bucket read of %s failed: %s", spec.key, type(exc).__name__)
            return None
        # Whoever else writes the bucket, only bytes that hash to their name are taken.
        if tmp.stat().st_size != record.size or hash_file(tmp).hexdigest() != record.sha256:
            log.warning("models bucket copy of %s does not match its hash; ignored", spec.key)
            return None
        return record

    def _from_source(self, spec: ModelSpec, tmp: Path, cancel: Cancel) -> tuple[int, str]:
        if spec.url.startswith("gs://"):
            return self._from_gs(spec, tmp)
        try:
            fetched = self.downloader.fetch(
                spec.url, tmp, max_bytes=self._limit(spec), cancel=cancel
            )
        except DownloadCancelled:
            raise ModelFetchError(
                f"model {spec.key}: download stopped (cancel or deadline)"
            ) from None
        except DownloadError as exc:
            raise ModelFetchError(f"model {spec.key}: download failed: {exc}") from None
        return fetched.bytes_downloaded, fetched.sha256

    def _from_gs(self, spec: ModelSpec, tmp: Path) -> tuple[int, str]:
        # The object the URL names, spelt one way only (the rule submit applies): another
        # spelling of an upload's name, or the mirror, would load bytes submit never allowed.
        try:
            target = parse_gs_url(spec.url)
        except UrlRefused as exc:
            raise ModelFetchError(f"model {spec.key}: gs:// URL {exc}") from None
        bucket, name = target.bucket, target.name
        if is_mirror(target, self.models_bucket):
            raise ModelFetchError(f"model {spec.key}: the models bucket's mirror is no source")
        if bucket not in self.gs_buckets:
            raise ModelFetchError(f"model {spec.key}: bucket {bucket} is not allowed")
        if self.blobs is None:
            raise ModelFetchError(f"model {spec.key}: no storage client for gs:// sources")
        try:
            found = self.blobs.download_file(bucket, name, str(tmp))
        except Exception as exc:
            raise ModelFetchError(f"model {spec.key}: gs://{bucket} read failed: {exc}") from None
        if not found:
            raise ModelFetchError(f"model {spec.key}: {spec.url} does not exist")
        size = tmp.stat().st_size
        if size > self._limit(spec):
            raise ModelFetchError(f"model {spec.key}: {size} bytes, more than allowed")
        return size, hash_file(tmp).hexdigest()

    def _verify(self, spec: ModelSpec, tmp: Path, sha256: str, source: str) -> Record:
        size = tmp.stat().st_size
        if spec.size_bytes is not None and size != spec.size_bytes:
            raise ModelFetchError(
                f"model {spec.key}: {source} sent {size} bytes, expected {spec.size_bytes}"
            )
        if spec.sha256 is not None and sha256 != spec.sha256:
            raise ModelFetchError(
                f"model {spec.key}: sha256 mismatch from {source}: got {sha256}, "
                f"expected {spec.sha256}"
            )
        return Record(sha256=sha256, size=size)

    def _install(self, tmp: Path, key: str, record: Record) -> Path:
        """Move verified bytes under their hash (kept if already there), then record the URL."""
        blob = self.blob_path(record.sha256)
        if blob.exists() and blob.stat().st_size == record.size:
            tmp.unlink(missing_ok=True)
        else:
            os.chmod(tmp, 0o440)
            os.replace(tmp, blob)
        index = self.root / INDEX_DIR / f"{key}.json"
        side = index.with_name(f".{uuid.uuid4().hex}.tmp")
        side.write_bytes(record.to_json())
        os.replace(side, index)
        return blob

    def _mirror(self, key: str, blob: Path, record: Record) -> None:
        if self.blobs is None or not self.models_bucket:
            return
        blobs, bucket = self.blobs, self.models_bucket

        def upload() -> None:
            name = f"models/{STORE_DIR}/{record.sha256}"
            if blobs.generation(bucket, name) is None:
                blobs.upload_file(bucket, name, str(blob), "application/octet-stream")
            # The record last: a record never points at content that is not there.
            blobs.write(
                bucket, f"models/{INDEX_DIR}/{key}.json", record.to_json(), "application/json"
            )

        self._mirrors.append(self._mirror_pool.submit(upload))


def _source_name(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
