"""Stopping a download from another thread: the job's cancel or deadline sets a `Cancel`, whose
hooks shut down the sockets the download's threads are blocked on."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

log = logging.getLogger(__name__)


class Cancel:
    """Set once (the job's cancel or deadline); every hook registered runs then, e.g. shutting
    down a socket a download is blocked on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._hooks: dict[int, Callable[[], None]] = {}
        self._next = 0

    @property
    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            hooks = list(self._hooks.values())
        for hook in hooks:
            _quietly(hook)

    @contextmanager
    def hook(self, action: Callable[[], None]) -> Iterator[None]:
        """Run `action` when set (at once if already set) while inside the block."""
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._hooks[key] = action
            already = self._set
        if already:
            _quietly(action)
        try:
            yield
        finally:
            with self._lock:
                self._hooks.pop(key, None)


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as exc:  # a hook that fails must not keep the others from running
        log.debug("cancel hook failed: %s", type(exc).__name__)


def shutdown(sock: socket.socket | None) -> None:
    """Wake a thread blocked reading `sock` (it sees EOF or an error)."""
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
