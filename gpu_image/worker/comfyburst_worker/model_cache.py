"""The on-disk model cache (ComfyUI's model folders) and where a missing model comes from.

A cache hit is the file plus its sidecar `{file}.comfyburst.json` ({size, sha256, url}, the
url without query or fragment so no `?token=` is stored) agreeing with the spec: no download
and no re-hash. A miss tries the models bucket's mirror first, then the model's own URL
(https / allowed http / gs://); the result is verified, moved into place atomically, and
mirrored to the models bucket in the background.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from comfyburst.ports import BlobStore
from comfyburst.schema import ModelSpec
from comfyburst_worker._download import DownloadError, HttpDownloader, hash_file
from comfyburst_worker._hosts import public_url
from comfyburst_worker.errors import ModelFetchError

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".comfyburst.json"


@dataclass(frozen=True)
class Sidecar:
    size: int
    sha256: str
    url: str

    def to_json(self) -> bytes:
        return json.dumps({"size": self.size, "sha256": self.sha256, "url": self.url}).encode()

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Sidecar | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(size=int(data["size"]), sha256=str(data["sha256"]), url=str(data["url"]))
        except (ValueError, KeyError, TypeError):
            return None

    def satisfies(self, spec: ModelSpec) -> bool:
        """The recorded file is the one the spec asks for."""
        if spec.size_bytes is not None and spec.size_bytes != self.size:
            return False
        if spec.sha256 is not None:
            return spec.sha256 == self.sha256
        return public_url(spec.url) == public_url(self.url)


@dataclass(frozen=True)
class EnsureResult:
    key: str
    cache_hit: bool
    source: str  # "cache", "mirror", "url"
    bytes_downloaded: int = 0


class ModelCache:
    """Ensures models on disk; one instance per agent, safe for parallel `ensure` calls."""

    def __init__(
        self,
        root: Path,
        downloader: HttpDownloader,
        blobs: BlobStore | None,
        models_bucket: str | None,
        gs_buckets: list[str],
    ) -> None:
        self.root = root
        self.downloader = downloader
        self.blobs = blobs
        self.models_bucket = models_bucket
        self.gs_buckets = set(gs_buckets) | ({models_bucket} if models_bucket else set())
        self._mirror_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mirror")
        self._mirrors: list[Future[None]] = []

    def path_of(self, spec: ModelSpec) -> Path:
        return self.root / spec.kind.value / spec.filename

    def is_cached(self, spec: ModelSpec) -> bool:
        """File and sidecar agree with the spec (a stat and a small read, no hashing)."""
        path = self.path_of(spec)
        sidecar_path = path.with_name(path.name + SIDECAR_SUFFIX)
        try:
            size = path.stat().st_size
            sidecar = Sidecar.parse(sidecar_path.read_bytes())
        except OSError:
            return False
        return sidecar is not None and sidecar.size == size and sidecar.satisfies(spec)

    def ensure(self, spec: ModelSpec) -> EnsureResult:
        """The model is in place when this returns; ModelFetchError otherwise."""
        if self.is_cached(spec):
            return EnsureResult(spec.key, True, "cache")
        path = self.path_of(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        if self._from_mirror(spec, tmp):
            sidecar = self._verify(spec, tmp, hash_file(tmp).hexdigest(), "the models bucket")
            self._install(tmp, path, sidecar)
            return EnsureResult(spec.key, False, "mirror", sidecar.size)
        downloaded, sha256 = self._from_source(spec, tmp)
        sidecar = self._verify(spec, tmp, sha256, _source_name(spec.url))
        self._install(tmp, path, sidecar)
        self._mirror(spec, path, sidecar)
        return EnsureResult(spec.key, False, "url", downloaded)

    def wait_for_mirrors(self) -> None:
        """Let background mirror uploads finish (before power-off)."""
        for future in self._mirrors:
            try:
                future.result()
            except Exception:
                log.exception("mirroring a model to the models bucket failed")
        self._mirrors.clear()

    def _mirror_names(self, spec: ModelSpec) -> tuple[str, str]:
        name = f"models/{spec.kind.value}/{spec.filename}"
        return name, name + SIDECAR_SUFFIX

    def _from_mirror(self, spec: ModelSpec, tmp: Path) -> bool:
        if self.blobs is None or not self.models_bucket:
            return False
        name, sidecar_name = self._mirror_names(spec)
        try:
            sidecar = Sidecar.parse(self.blobs.read(self.models_bucket, sidecar_name))
            if sidecar is None or not sidecar.satisfies(spec):
                return False
            tmp.unlink(missing_ok=True)
            return self.blobs.download_file(self.models_bucket, name, str(tmp))
        except Exception as exc:
            # The mirror is an optimisation; the source URL still works.
            log.warning("models bucket read of %s failed: %s", spec.key, exc)
            tmp.unlink(missing_ok=True)
            return False

    def _from_source(self, spec: ModelSpec, tmp: Path) -> tuple[int, str]:
        url = spec.url
        if url.startswith("gs://"):
            return self._from_gs(spec, tmp)
        try:
            fetched = self.downloader.fetch(url, tmp)
        except DownloadError as exc:
            raise ModelFetchError(f"model {spec.key}: download failed: {exc}") from None
        return fetched.bytes_downloaded, fetched.sha256

    def _from_gs(self, spec: ModelSpec, tmp: Path) -> tuple[int, str]:
        parts = urlsplit(spec.url)
        bucket, name = parts.netloc, parts.path.lstrip("/")
        if bucket not in self.gs_buckets:
            raise ModelFetchError(f"model {spec.key}: bucket {bucket} is not allowed")
        if self.blobs is None:
            raise ModelFetchError(f"model {spec.key}: no storage client for gs:// sources")
        tmp.unlink(missing_ok=True)
        try:
            found = self.blobs.download_file(bucket, name, str(tmp))
        except Exception as exc:
            raise ModelFetchError(f"model {spec.key}: gs://{bucket} read failed: {exc}") from None
        if not found:
            raise ModelFetchError(f"model {spec.key}: {spec.url} does not exist")
        return tmp.stat().st_size, hash_file(tmp).hexdigest()

    def _verify(self, spec: ModelSpec, tmp: Path, sha256: str, source: str) -> Sidecar:
        size = tmp.stat().st_size
        if spec.size_bytes is not None and size != spec.size_bytes:
            tmp.unlink(missing_ok=True)
            raise ModelFetchError(
                f"model {spec.key}: {source} sent {size} bytes, expected {spec.size_bytes}"
            )
        if spec.sha256 is not None and sha256 != spec.sha256:
            tmp.unlink(missing_ok=True)
            raise ModelFetchError(
                f"model {spec.key}: sha256 mismatch from {source}: got {sha256}, "
                f"expected {spec.sha256}"
            )
        return Sidecar(size=size, sha256=sha256, url=public_url(spec.url))

    def _install(self, tmp: Path, path: Path, sidecar: Sidecar) -> None:
        sidecar_path = path.with_name(path.name + SIDECAR_SUFFIX)
        # The sidecar goes first as a temp too, so a crash leaves no sidecar for a wrong file.
        sidecar_path.unlink(missing_ok=True)
        os.replace(tmp, path)
        side_tmp = sidecar_path.with_name(sidecar_path.name + ".tmp")
        side_tmp.write_bytes(sidecar.to_json())
        os.replace(side_tmp, sidecar_path)

    def _mirror(self, spec: ModelSpec, path: Path, sidecar: Sidecar) -> None:
        if self.blobs is None or not self.models_bucket:
            return
        blobs, bucket = self.blobs, self.models_bucket
        name, sidecar_name = self._mirror_names(spec)

        def upload() -> None:
            blobs.upload_file(bucket, name, str(path), "application/octet-stream")
            # The sidecar last: a mirror without one is never trusted.
            blobs.write(bucket, sidecar_name, sidecar.to_json(), "application/json")

        self._mirrors.append(self._mirror_pool.submit(upload))


def _source_name(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
