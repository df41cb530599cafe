"""HTTP(S) model downloads: redirects checked hop by hop, resume, parallel ranged GETs.

Bounded: never more than `max_bytes` is read (a larger declared length is refused before the
body), bytes are taken raw off the wire (identity encoding asked for, nothing inflated: the
sha256 is of the bytes sent), and a `Cancel` set by the job's cancel or deadline shuts the
sockets down, so a download stops within the poll interval that set it. A failed download
leaves nothing behind: its partial file and marker are removed.

The single-stream path hashes while writing. The ranged path reads N parts straight from the
socket into reused buffers (`http.client` `readinto`: no per-part allocation, no copies in
urllib3), `pwrite`s each into one preallocated file and hashes the buffers in file order as
they land, so the digest is ready with the last byte. sha256 drops the GIL for large buffers,
so hashing overlaps the reads; a bounded window of buffers keeps memory flat.
"""

from __future__ import annotations

import hashlib
import http.client
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
import requests.certs
import requests.utils
import urllib3.exceptions
from urllib3.connection import HTTPConnection  # what pinned_connection opens
from urllib3.response import HTTPResponse

from comfyburst.adapters.pinned_http import (
    Resolver,
    pinned_connection,
    pinned_session,
    system_resolver,
)
from comfyburst_worker._cancel import Cancel, shutdown
from comfyburst_worker._hosts import HostPolicy
from comfyburst_worker._parts import DownloadCancelled, DownloadError, PartWindow

log = logging.getLogger(__name__)

_READ_BYTES = 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


class TooLarge(DownloadError):
    """The source declared or sent more bytes than allowed."""


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
        resolver: Resolver = system_resolver,
    ) -> None:
        self.policy = policy
        self.parallelism, self.chunk_bytes = parallelism, chunk_bytes
        self.min_parallel_bytes = min_parallel_bytes
        self.timeout_s, self.max_redirects, self.retries = timeout_s, max_redirects, retries
        self._sleep = sleep
        self._resolver = resolver
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            # Every connection passes the URL rule and goes to the address it checked; no
            # proxies or .netrc credentials from the environment.
            session = pinned_session(self.policy.rule, self._resolver)
            self._local.session = session
        return session

    def fetch(
        self, url: str, tmp: Path, *, max_bytes: int | None = None, cancel: Cancel | None = None
    ) -> Fetched:
        """Download `url` into `tmp`, at most `max_bytes`; retries resume from what the failed
        try left. `tmp` must be a name only this URL leads to (the model cache's
        partial-download folder): a file already there is resumed as this URL's bytes."""
        marker = tmp.with_name(tmp.name + ".ranged")
        if marker.exists():
            # A ranged download has holes we cannot locate; start over.
            tmp.unlink(missing_ok=True)
            marker.unlink()
        try:
            return self._fetch(url, tmp, marker, max_bytes, cancel or Cancel())
        except BaseException:
            tmp.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            raise

    def _fetch(
        self, url: str, tmp: Path, marker: Path, max_bytes: int | None, cancel: Cancel
    ) -> Fetched:
        downloaded = 0
        for attempt in range(self.retries + 1):
            if cancel.is_set:
                raise DownloadCancelled(f"{_host(url)}: cancelled")
            start = tmp.stat().st_size if tmp.exists() else 0
            try:
                return self._attempt(url, tmp, start, marker, downloaded, max_bytes, cancel)
            except _Retry as exc:
                if cancel.is_set:
                    raise DownloadCancelled(f"{_host(url)}: cancelled") from None
                downloaded = exc.args[1] if len(exc.args) > 1 else downloaded
                if attempt == self.retries:
                    raise DownloadError(f"{_host(url)}: {exc.args[0]}") from None
                log.warning("download from %s interrupted (%s); resuming", _host(url), exc.args[0])
                self._sleep(min(0.2 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    def _open(self, url: str, start: int) -> tuple[requests.Response, str]:
        submitted = url
        for hop in range(self.max_redirects + 1):
            try:
                # Only a redirect hop may go to a CDN host; the submitted URL may not.
                self.policy.check(url, redirect=hop > 0)
            except ValueError as exc:
                raise DownloadError(f"refused {_host(url)}: {exc}") from None
            # A token only inside its scope, and never on a hop to another host.
            token = self.policy.headers_for(url, submitted if hop else None)
            headers = {"Accept-Encoding": "identity", **token}
            if start:
                headers["Range"] = f"bytes={start}-"
            try:
                resp = self._session().get(
                    url, headers=headers, stream=True, allow_redirects=False, timeout=self.timeout_s
                )
            except requests.exceptions.InvalidURL as exc:
                # The adapter's check: a name resolving to a non-public address lands here.
                raise DownloadError(f"refused {_host(url)}: {exc}") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Retry(type(exc).__name__) from None
            if resp.status_code in _REDIRECTS and resp.headers.get("Location"):
                resp.close()
                url = urljoin(url, resp.headers["Location"])
                continue
            return resp, url
        raise DownloadError(f"{_host(url)}: more than {self.max_redirects} redirects")

    def _attempt(
        self,
        url: str,
        tmp: Path,
        start: int,
        marker: Path,
        downloaded: int,
        max_bytes: int | None,
        cancel: Cancel,
    ) -> Fetched:
        resp, final = self._open(url, start)
        with resp:
            status = resp.status_code
            if status == 416 and start:
                # The partial file may already be whole; the caller's size check decides.
                return Fetched(start, hash_file(tmp).hexdigest(), downloaded)
            length = _declared_length(resp)
            if status == 206 and start:
                if not resp.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
                    tmp.unlink(missing_ok=True)
                    raise _Retry("server resumed at the wrong offset", downloaded)
                _check_size(final, start + max(length, 0), max_bytes)
                return self._stream(resp, tmp, start, downloaded, url, max_bytes, cancel)
            if status == 200:
                _check_size(final, length, max_bytes)
                ranged = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
                if ranged and length >= max(self.min_parallel_bytes, 1) and self.parallelism > 1:
                    resp.close()
                    return self._ranged(final, tmp, length, marker, downloaded, cancel, url)
                return self._stream(resp, tmp, 0, downloaded, url, max_bytes, cancel)
            if status >= 500 or status == 429:
                raise _Retry(f"HTTP {status}", downloaded)
            raise DownloadError(f"{_host(final)}: HTTP {status}")

    def _stream(
        self,
        resp: requests.Response,
        tmp: Path,
        start: int,
        downloaded: int,
        url: str,
        max_bytes: int | None,
        cancel: Cancel,
    ) -> Fetched:
        digest = hash_file(tmp, start) if start else hashlib.sha256()
        size = start
        expected = resp.headers.get("Content-Length")
        sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
        with open(tmp, "ab" if start else "wb") as fh, cancel.hook(lambda: shutdown(sock)):
            try:
                # Raw bytes as sent: a Content-Encoding is never undone (no inflating on disk).
                for block in resp.raw.stream(_READ_BYTES, decode_content=False):
                    if cancel.is_set:
                        raise DownloadCancelled(f"{_host(url)}: cancelled")
                    size += len(block)
                    if max_bytes is not None and size > max_bytes:
                        raise TooLarge(f"{_host(url)}: sent more than {max_bytes} bytes")
                    digest.update(block)
                    fh.write(block)
                    downloaded += len(block)
            except (OSError, requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                if cancel.is_set:
                    raise DownloadCancelled(f"{_host(url)}: cancelled") from None
                fh.flush()
                raise _Retry(type(exc).__name__, downloaded) from None
        if cancel.is_set:
            raise DownloadCancelled(f"{_host(url)}: cancelled")
        if expected is not None and size - start != int(expected):
            raise _Retry("connection closed early", downloaded)
        return Fetched(size, digest.hexdigest(), downloaded)

    def _ranged(
        self,
        url: str,
        tmp: Path,
        size: int,
        marker: Path,
        downloaded: int,
        cancel: Cancel,
        submitted: str,
    ) -> Fetched:
        marker.touch()
        with open(tmp, "wb") as fh:
            fh.truncate(size)
        parts = math.ceil(size / self.chunk_bytes)
        window = PartWindow(parts, self.parallelism * 2, self.chunk_bytes)
        with cancel.hook(window.cancel):
            fetched = self._ranged_parts(url, tmp, size, window, downloaded, submitted)
        marker.unlink(missing_ok=True)
        return fetched

    def _ranged_parts(
        self, url: str, tmp: Path, size: int, window: PartWindow, downloaded: int, submitted: str
    ) -> Fetched:
        parts = math.ceil(size / self.chunk_bytes)
        fd = os.open(tmp, os.O_WRONLY)
        headers = {
            "User-Agent": requests.utils.default_user_agent(),
            "Accept-Encoding": "identity",
            "Host": urlsplit(url).netloc.rpartition("@")[2],  # the pool connects to an address
            **self.policy.headers_for(url, submitted if url != submitted else None),
        }
        workers: list[threading.Thread] = []
        try:
            for _ in range(min(self.parallelism, parts)):
                worker = threading.Thread(
                    target=self._part_worker,
                    args=(window, url, headers, fd, size),
                    name="range-part",
                    daemon=True,
                )
                worker.start()
                workers.append(worker)
            digest = hashlib.sha256()
            for index in range(parts):
                view = window.wait_part(index)
                digest.update(view)
                window.hashed(index, view)
            for worker in workers:
                worker.join()
        finally:
            window.abort()
            # No worker may pwrite after the close: the fd number could be reused meanwhile.
            # Each stops at its next abort check, at worst after one socket timeout.
            for worker in workers:
                worker.join()
            os.close(fd)
        return Fetched(size, digest.hexdigest(), downloaded + size)

    def _part_worker(
        self, window: PartWindow, url: str, headers: dict[str, str], fd: int, size: int
    ) -> None:
        conn: HTTPConnection | None = None
        try:
            while (task := window.take()) is not None:
                index, buffer = task
                lo = index * self.chunk_bytes
                view = memoryview(buffer)[: min(size - lo, self.chunk_bytes)]
                conn = self._read_range(conn, url, headers, lo, view, window)
                if window.aborted:
                    return
                written = 0
                while written < len(view):
                    written += os.pwrite(fd, view[written:], lo + written)
                window.put(index, view)
        except BaseException as exc:
            window.fail(exc)
        finally:
            if conn is not None:
                conn.close()

    def _read_range(
        self,
        conn: HTTPConnection | None,
        url: str,
        headers: dict[str, str],
        lo: int,
        view: memoryview,
        window: PartWindow,
    ) -> HTTPConnection:
        """Fill `view` with bytes lo.. of `url` over `conn` (kept alive; reopened on errors)."""
        hi = lo + len(view) - 1
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in range(self.retries + 1):
            if window.aborted:
                raise DownloadError("aborted")
            try:
                conn = conn or window.track(
                    pinned_connection(url, self.policy.rule, self.timeout_s, self._resolver)
                )
                conn.request(
                    "GET",
                    target,
                    headers={**headers, "Range": f"bytes={lo}-{hi}"},
                    preload_content=False,
                    decode_content=False,
                )
                resp = conn.getresponse()
                content_range = resp.getheader("Content-Range") or ""
                if resp.status == 206 and content_range.startswith(f"bytes {lo}-{hi}/"):
                    if _read_into(resp, view) == len(view):
                        return conn
                elif resp.status < 500 and resp.status not in (206, 429):
                    raise DownloadError(f"{_host(url)}: HTTP {resp.status} for a range")
            except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
                log.warning("range %d-%d from %s: %s", lo, hi, _host(url), type(exc).__name__)
            # Whatever is left of that response is unread: the connection cannot be reused.
            if conn is not None:
                conn.close()
                conn = None
            if attempt < self.retries and not window.aborted:
                self._sleep(min(0.2 * 2**attempt, 5.0))
        raise DownloadError(f"{_host(url)}: range {lo}-{hi} failed {self.retries + 1} times")


def _read_into(resp: HTTPResponse, view: memoryview) -> int:
    """Read the body straight into `view`; the count is short if the server stopped early."""
    got = 0
    while got < len(view):
        n = resp.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _declared_length(resp: requests.Response) -> int:
    """Content-Length as declared; -1 when absent or not a number."""
    try:
        return int(resp.headers.get("Content-Length") or -1)
    except ValueError:
        return -1


def _check_size(url: str, declared: int, max_bytes: int | None) -> None:
    """Refuse before reading the body when the declared size is over the limit."""
    if max_bytes is not None and declared > max_bytes:
        raise TooLarge(f"{_host(url)}: declares {declared} bytes, more than {max_bytes} allowed")


def _host(url: str) -> str:
    return urlsplit(url).netloc or url[:40]
