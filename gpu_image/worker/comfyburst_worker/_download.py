"""HTTP(S) model downloads: redirects checked hop by hop, resume, parallel ranged GETs.

The single-stream path hashes while writing. The ranged path writes N parts into one
preallocated file and hashes the parts in file order as they arrive, so the digest is ready
when the last byte lands (a bounded window keeps memory flat).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from comfyburst_worker._hosts import HostPolicy

log = logging.getLogger(__name__)

_READ_BYTES = 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


class DownloadError(Exception):
    """The download failed for good (the message names the host, never a token)."""


class _Retry(Exception):
    """A transient failure worth another try from where the file stands."""


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str
    bytes_downloaded: int


def hash_file(path: Path, limit: int | None = None) -> hashlib._Hash:
    """SHA-256 of a file's first `limit` bytes (all by default)."""
    digest = hashlib.sha256()
    remaining = path.stat().st_size if limit is None else limit
    with open(path, "rb") as fh:
        while remaining > 0:
            block = fh.read(min(8 * _READ_BYTES, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    return digest


class HttpDownloader:
    """Fetches one URL into a temp file; verification against the spec is the caller's."""

    def __init__(
        self,
        policy: HostPolicy,
        *,
        parallelism: int = 8,
        chunk_bytes: int = 8 * 1024 * 1024,
        min_parallel_bytes: int = 32 * 1024 * 1024,
        timeout_s: float = 60.0,
        max_redirects: int = 10,
        retries: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self.parallelism, self.chunk_bytes = parallelism, chunk_bytes
        self.min_parallel_bytes = min_parallel_bytes
        self.timeout_s, self.max_redirects, self.retries = timeout_s, max_redirects, retries
        self._sleep = sleep
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # No proxies or .netrc credentials from the environment.
            session.trust_env = False
            self._local.session = session
        return session

    def fetch(self, url: str, tmp: Path) -> Fetched:
        """Download `url` into `tmp`, resuming what a previous attempt left there."""
        marker = tmp.with_name(tmp.name + ".ranged")
        if marker.exists():
            # A ranged download has holes we cannot locate; start over.
            tmp.unlink(missing_ok=True)
            marker.unlink()
        downloaded = 0
        for attempt in range(self.retries + 1):
            start = tmp.stat().st_size if tmp.exists() else 0
            try:
                return self._attempt(url, tmp, start, marker, downloaded)
            except _Retry as exc:
                downloaded = exc.args[1] if len(exc.args) > 1 else downloaded
                if attempt == self.retries:
                    raise DownloadError(f"{_host(url)}: {exc.args[0]}") from None
                log.warning("download from %s interrupted (%s); resuming", _host(url), exc.args[0])
                self._sleep(min(0.2 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    def _open(self, url: str, start: int) -> tuple[requests.Response, str]:
        for _ in range(self.max_redirects + 1):
            try:
                self.policy.check(url)
            except ValueError as exc:
                raise DownloadError(f"refused {_host(url)}: {exc}") from None
            headers = {"Accept-Encoding": "identity", **self.policy.headers_for(url)}
            if start:
                headers["Range"] = f"bytes={start}-"
            try:
                resp = self._session().get(
                    url, headers=headers, stream=True, allow_redirects=False, timeout=self.timeout_s
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Retry(type(exc).__name__) from None
            if resp.status_code in _REDIRECTS and resp.headers.get("Location"):
                resp.close()
                url = urljoin(url, resp.headers["Location"])
                continue
            return resp, url
        raise DownloadError(f"{_host(url)}: more than {self.max_redirects} redirects")

    def _attempt(self, url: str, tmp: Path, start: int, marker: Path, downloaded: int) -> Fetched:
        resp, final = self._open(url, start)
        with resp:
            status = resp.status_code
            if status == 416 and start:
                # The partial file may already be whole; the caller's size check decides.
                return Fetched(start, hash_file(tmp).hexdigest(), downloaded)
            if status == 206 and start:
                if not resp.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
                    tmp.unlink(missing_ok=True)
                    raise _Retry("server resumed at the wrong offset", downloaded)
                return self._stream(resp, tmp, start, downloaded, url)
            if status == 200:
                length = int(resp.headers.get("Content-Length") or -1)
                ranged = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
                if ranged and length >= max(self.min_parallel_bytes, 1) and self.parallelism > 1:
                    resp.close()
                    return self._ranged(final, tmp, length, marker, downloaded)
                return self._stream(resp, tmp, 0, downloaded, url)
            if status >= 500 or status == 429:
                raise _Retry(f"HTTP {status}", downloaded)
            raise DownloadError(f"{_host(final)}: HTTP {status}")

    def _stream(
        self, resp: requests.Response, tmp: Path, start: int, downloaded: int, url: str
    ) -> Fetched:
        digest = hash_file(tmp, start) if start else hashlib.sha256()
        size = start
        expected = resp.headers.get("Content-Length")
        with open(tmp, "ab" if start else "wb") as fh:
            try:
                for block in resp.iter_content(_READ_BYTES):
                    digest.update(block)
                    fh.write(block)
                    size += len(block)
                    downloaded += len(block)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                fh.flush()
                raise _Retry(type(exc).__name__, downloaded) from None
        if expected is not None and size - start != int(expected):
            raise _Retry("connection closed early", downloaded)
        return Fetched(size, digest.hexdigest(), downloaded)

    def _ranged(self, url: str, tmp: Path, size: int, marker: Path, downloaded: int) -> Fetched:
        marker.touch()
        with open(tmp, "wb") as fh:
            fh.truncate(size)
        parts = math.ceil(size / self.chunk_bytes)
        window = _Window(parts, self.parallelism * 2)
        fd = os.open(tmp, os.O_WRONLY)
        headers = self.policy.headers_for(url)
        try:
            workers = [
                threading.Thread(
                    target=self._part_worker, args=(window, url, headers, fd, size), daemon=True
                )
                for _ in range(min(self.parallelism, parts))
            ]
            for worker in workers:
                worker.start()
            digest = hashlib.sha256()
            for index in range(parts):
                digest.update(window.wait_part(index))
            for worker in workers:
                worker.join()
        finally:
            window.abort()
            os.close(fd)
        marker.unlink(missing_ok=True)
        return Fetched(size, digest.hexdigest(), downloaded + size)

    def _part_worker(
        self, window: _Window, url: str, headers: dict[str, str], fd: int, size: int
    ) -> None:
        try:
            while (index := window.take()) is not None:
                lo = index * self.chunk_bytes
                hi = min(size, lo + self.chunk_bytes) - 1
                data = self._get_range(url, headers, lo, hi)
                os.pwrite(fd, data, lo)
                window.put(index, data)
        except BaseException as exc:
            window.fail(exc)

    def _get_range(self, url: str, headers: dict[str, str], lo: int, hi: int) -> bytes:
        want = hi - lo + 1
        for attempt in range(self.retries + 1):
            try:
                with self._session().get(
                    url,
                    headers={**headers, "Range": f"bytes={lo}-{hi}", "Accept-Encoding": "identity"},
                    stream=True,
                    allow_redirects=False,
                    timeout=self.timeout_s,
                ) as resp:
                    if resp.status_code == 206:
                        data = resp.raw.read(want)
                        if len(data) == want:
                            return data
                    elif resp.status_code < 500 and resp.status_code != 429:
                        raise DownloadError(f"{_host(url)}: HTTP {resp.status_code} for a range")
            except (requests.ConnectionError, requests.Timeout) as exc:
                log.warning("range %d-%d from %s: %s", lo, hi, _host(url), type(exc).__name__)
            if attempt < self.retries:
                self._sleep(min(0.2 * 2**attempt, 5.0))
        raise DownloadError(f"{_host(url)}: range {lo}-{hi} failed {self.retries + 1} times")


class _Window:
    """Hands out part indexes no further than `span` ahead of the hasher; collects the parts."""

    def __init__(self, parts: int, span: int) -> None:
        self._cond = threading.Condition()
        self._parts, self._span = parts, span
        self._next, self._hashed = 0, 0
        self._ready: dict[int, bytes] = {}
        self._error: BaseException | None = None

    def take(self) -> int | None:
        with self._cond:
            while self._error is None and self._next < self._parts:
                if self._next < self._hashed + self._span:
                    index = self._next
                    self._next += 1
                    return index
                self._cond.wait()
            return None

    def put(self, index: int, data: bytes) -> None:
        with self._cond:
            self._ready[index] = data
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()

    def abort(self) -> None:
        self.fail(DownloadError("aborted"))

    def wait_part(self, index: int) -> bytes:
        with self._cond:
            while index not in self._ready:
                if self._error is not None:
                    error = self._error
                    if isinstance(error, DownloadError):
                        raise error
                    raise DownloadError(f"ranged download failed: {type(error).__name__}")
                self._cond.wait()
            data = self._ready.pop(index)
            self._hashed = index + 1
            self._cond.notify_all()
            return data


def _host(url: str) -> str:
    return urlsplit(url).netloc or url[:40]
