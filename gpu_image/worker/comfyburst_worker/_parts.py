"""The ranged download's window of parts, and the download errors it raises."""

from __future__ import annotations

import threading

from urllib3.connection import HTTPConnection

from comfyburst_worker._cancel import shutdown


class DownloadError(Exception):
    """The download failed for good (the message names the host, never a token)."""


class DownloadCancelled(DownloadError):
    """The job was cancelled or passed its deadline while downloading."""


class PartWindow:
    """Hands out part indexes (and a buffer each) no further than `span` ahead of the hasher.

    At most `span` parts are between `take` and `hashed`, so `span` buffers serve them all.
    """

    def __init__(self, parts: int, span: int, buffer_bytes: int) -> None:
        self._cond = threading.Condition()
        self._parts, self._span, self._buffer_bytes = parts, span, buffer_bytes
        self._next, self._hashed = 0, 0
        self._ready: dict[int, memoryview] = {}
        self._free: list[bytearray] = []
        self._error: BaseException | None = None
        self._conns: list[HTTPConnection] = []

    def track(self, conn: HTTPConnection) -> HTTPConnection:
        """A part connection to shut down on cancel."""
        with self._cond:
            self._conns.append(conn)
        return conn

    def cancel(self) -> None:
        """Stop every part now: blocked socket reads end, waiters wake."""
        self.fail(DownloadCancelled("cancelled"))
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            shutdown(conn.sock)

    def take(self) -> tuple[int, bytearray] | None:
        with self._cond:
            while self._error is None and self._next < self._parts:
                if self._next < self._hashed + self._span:
                    index = self._next
                    self._next += 1
                    buffer = self._free.pop() if self._free else None
                    break
                self._cond.wait()
            else:
                return None
        return index, buffer if buffer is not None else bytearray(self._buffer_bytes)

    def put(self, index: int, view: memoryview) -> None:
        with self._cond:
            self._ready[index] = view
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()

    def abort(self) -> None:
        self.fail(DownloadError("aborted"))

    @property
    def aborted(self) -> bool:
        """Some part failed or the download was given up: stop fetching parts."""
        return self._error is not None

    def wait_part(self, index: int) -> memoryview:
        with self._cond:
            while index not in self._ready:
                if self._error is not None:
                    error = self._error
                    if isinstance(error, DownloadError):
                        raise error
                    raise DownloadError(f"ranged download failed: {type(error).__name__}")
                self._cond.wait()
            return self._ready.pop(index)

    def hashed(self, index: int, view: memoryview) -> None:
        """Part `index` is in the digest: its buffer may take the next part."""
        with self._cond:
            self._free.append(view.obj)  # type: ignore[arg-type]
            self._hashed = index + 1
            self._cond.notify_all()
