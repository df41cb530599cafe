"""WebhookSender over the one pinned address rule (`adapters/pinned_http.py`): the webhook URL
rule (`request_policy.check_webhook_url`) admits the URL, every address the name resolves to
is checked with the one address rule (`domain/urls.py`) and the connection goes to the address
it checked; TLS verifies the certificate for the name. A loopback receiver (local cloud only)
is that rule's test entry, whose addresses must be loopback.

One attempt is bounded as a whole, not per socket read: connect, TLS, sending the request and
reading the status line and headers all end by `timeout_s` after the attempt began. A timer
shuts the socket down at that deadline whatever phase it is in (a receiver dripping its
answer a byte at a time resets every per-read timeout, never this one). Only the status and
headers are read (http.client caps those at 100 lines of 64 KiB); the body is never read, the
connection is closed, so a receiver can neither hold the function nor fill its memory.

The name is looked up inside the same deadline (in a lookup thread the attempt stops waiting
for), and a name that does not resolve now is a failed attempt, redelivered, not a refused URL:
a receiver's DNS may be down for a while. Only addresses the rule refuses refuse the URL.

No redirects are followed and nothing is retried here: Pub/Sub redelivers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import socket
import ssl
import threading
import time

import requests.certs

from comfyburst.adapters.pinned_http import Resolver, checked_address, system_resolver
from comfyburst.domain.request_policy import WebhookTarget, check_webhook_url
from comfyburst.domain.urls import UrlRefused, UrlRule, check_url
from comfyburst.errors import DeliveryFailed, InvalidRequest

USER_AGENT = "ComfyBurst-Webhooks/1"


class HttpWebhookSender:
    def __init__(
        self, *, allow_loopback: bool = False, resolver: Resolver = system_resolver
    ) -> None:
        self._allow_loopback = allow_loopback
        self._resolver = resolver
        # Lookups the attempts stopped waiting for finish here, in the background, at the
        # system resolver's own pace; a few threads are enough, one lookup per attempt.
        self._lookups = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="webhook-dns")

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        target = check_webhook_url(url, allow_loopback=self._allow_loopback)
        if target.scheme == "https":
            rule = UrlRule.of([target.host])
        else:  # a loopback receiver the webhook rule admitted
            rule = UrlRule.of([], test_hostports=[f"{target.host}:{target.port}"])
        checked = check_url(url, rule)
        addresses = self._lookup(checked.host, checked.port, deadline, timeout_s)
        try:
            address = checked_address(checked, lambda _host, _port: addresses)
        except UrlRefused as exc:
            raise InvalidRequest(f"webhook URL: {exc}", field="webhook_url") from None
        try:
            return _attempt(target, address, body, headers, deadline)
        except _TimedOut:
            raise DeliveryFailed(f"webhook receiver did not answer within {timeout_s} s") from None
        except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            raise DeliveryFailed(f"webhook receiver did not answer: {exc!r}") from None

    def _lookup(self, host: str, port: int, deadline: float, timeout_s: float) -> list[str]:
        """The name's addresses, looked up by `deadline`; DeliveryFailed when there are none."""
        lookup = self._lookups.submit(self._resolver, host, port)
        try:
            return lookup.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            raise DeliveryFailed(f"{host} did not resolve within {timeout_s} s") from None
        except UrlRefused as exc:  # the resolver's: no answer now, perhaps one later
            raise DeliveryFailed(f"webhook URL: {exc}") from None


class _TimedOut(Exception):
    """The attempt's deadline passed."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _TimedOut
    return left


def _attempt(
    target: WebhookTarget, address: str, body: bytes, headers: dict[str, str], deadline: float
) -> int:
    """POST `body` to the checked `address`; the status code, read by `deadline` or never."""
    sock = socket.create_connection((address, target.port), timeout=_remaining(deadline))
    watchdog = _Watchdog(sock, deadline)
    connection = _Connection(target.host, target.port, sock)
    try:
        if target.scheme == "https":
            connection.sock = _tls_context().wrap_socket(sock, server_hostname=target.host)
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={
                **headers,
                "Host": _host_header(target),
                "User-Agent": USER_AGENT,
                "Connection": "close",
            },
        )
        response = connection.getresponse()  # the status line and headers; never the body
        if watchdog.fired:  # the shutdown ended the headers early: not an answer
            raise _TimedOut
        return int(response.status)
    except (OSError, http.client.HTTPException) as exc:
        # The socket's own timeout is the time left at connect: when it ends a read first
        # (the watchdog's timer is a hair later), the deadline has passed just the same.
        if watchdog.fired or isinstance(exc, TimeoutError):
            raise _TimedOut from None
        raise
    finally:
        watchdog.stop()
        connection.close()
        sock.close()


class _Connection(http.client.HTTPConnection):
    """An http.client connection over a socket already connected (and wrapped) by us."""

    def __init__(self, host: str, port: int, sock: socket.socket) -> None:
        super().__init__(host, port)
        self.sock = sock

    def connect(self) -> None:
        # Never a second connection: the one to the checked address is the only one.
        raise http.client.NotConnected("the webhook connection is closed")


class _Watchdog:
    """Shuts a socket down at a deadline. It holds a duplicate of the socket's descriptor:
    shutdown acts on the connection both share, so it also ends a TLS handshake or read in
    progress on the original, which the TLS wrapper took over."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._dup = sock.dup()
        self._lock = threading.Lock()
        self._stopped = False
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.fired = True
            with contextlib.suppress(OSError):  # already closed by the receiver
                self._dup.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._stopped = True
            self._dup.close()


def _tls_context() -> ssl.SSLContext:
    """Certificates verified for the name, against requests' CA bundle (as pinned_http)."""
    return ssl.create_default_context(cafile=requests.certs.where())


def _host_header(target: WebhookTarget) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"
