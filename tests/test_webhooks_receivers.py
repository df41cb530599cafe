"""Hostile webhook receivers on loopback: one that drips its answer a byte at a time, one that
answers a huge body, one that never answers. One delivery attempt ends by its timeout whatever
the receiver does, and only the status and headers are read (adapters/webhook_http.py); then
the same through the on_result function's functions-framework app on the Firestore emulator.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from comfyburst.adapters.pinned_http import Resolver
from comfyburst.adapters.webhook_http import HttpWebhookSender
from comfyburst.domain import webhooks
from comfyburst.domain.urls import UrlRefused
from comfyburst.errors import DeliveryFailed, InvalidRequest
from comfyburst.schema import ResultMessage
from comfyburst.services.results import encode_result
from comfyburst.states import JobState
from tests._api_support import MAIN_SOURCE
from tests.test_webhooks import SECRET, make_job

TIMEOUT_S = 2.0
SLACK_S = 1.5  # thread start-up and a loaded machine; far below what a drip stretches to
DRIP_EVERY_S = 0.5
HUGE_BYTES = 256 * 1024 * 1024
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
DRIP_BODY = b"x" * 39  # 19.5 s at a byte per 0.5 s


class Receiver:
    """A raw TCP receiver on 127.0.0.1 whose `behave(conn)` answers each request it reads."""

    def __init__(
        self, behave: Callable[[Receiver, socket.socket], None], *, read_request: bool = True
    ) -> None:
        self.behave = behave
        self.read_request = read_request  # False: answer at once (a TLS server's side)
        self.stop = threading.Event()
        self.sent = 0  # bytes of answer handed to the socket
        self.requests: list[bytes] = []
        self.answered = threading.Event()  # a behaviour returned, or its connection broke
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/in"

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b"" if self.read_request else b"\r\n\r\n"
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data)
            try:
                self.behave(self, conn)
            except OSError:
                pass  # the sender closed the connection: what these receivers are for
            finally:
                self.answered.set()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def drip(self, conn: socket.socket, data: bytes) -> None:
        for index in range(len(data)):
            if self.stop.wait(DRIP_EVERY_S):  # the receiver's pace, not a test's wait
                return
            self.send(conn, data[index : index + 1])

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


def drip_headers(receiver: Receiver, conn: socket.socket) -> None:
    receiver.drip(conn, ANSWER)


def status_then_drip_headers(receiver: Receiver, conn: socket.socket) -> None:
    """The status line at once, then the headers a byte at a time: at the deadline the
    shutdown ends the header block early, which must not read as the receiver's 200."""
    status, rest = ANSWER.split(b"\r\n", 1)
    receiver.send(conn, status + b"\r\n")
    receiver.drip(conn, rest)


def drip_body(receiver: Receiver, conn: socket.socket) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(DRIP_BODY)
    receiver.send(conn, head)
    receiver.drip(conn, DRIP_BODY)


def huge_body(receiver: Receiver, conn: socket.socket) -> None:
    receiver.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE_BYTES)
    chunk = bytes(1024 * 1024)
    for _ in range(HUGE_BYTES // len(chunk)):
        receiver.send(conn, chunk)


def silent(receiver: Receiver, conn: socket.socket) -> None:
    receiver.stop.wait(30)


@pytest.fixture
def receivers() -> Iterator[Callable[[Callable[[Receiver, socket.socket], None]], Receiver]]:
    started: list[Receiver] = []

    def start(behave: Callable[[Receiver, socket.socket], None]) -> Receiver:
        started.append(Receiver(behave))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def _post(url: str) -> tuple[int | DeliveryFailed, float]:
    sender = HttpWebhookSender(allow_loopback=True)
    began = time.monotonic()
    try:
        answer: int | DeliveryFailed = sender.post(url, b"{}", {}, TIMEOUT_S)
    except DeliveryFailed as exc:
        answer = exc
    return answer, time.monotonic() - began


@pytest.mark.parametrize(
    "behave",
    [drip_headers, status_then_drip_headers, silent],
    ids=["drip_headers", "status_then_drip_headers", "silent"],
)
def test_an_answer_slower_than_the_timeout_ends_the_attempt_at_the_timeout(
    receivers: Any, behave: Callable[[Receiver, socket.socket], None]
) -> None:
    receiver = receivers(behave)
    answer, took_s = _post(receiver.url)
    assert isinstance(answer, DeliveryFailed), answer
    assert "within 2.0 s" in answer.message
    assert TIMEOUT_S - 0.1 <= took_s <= TIMEOUT_S + SLACK_S, took_s
    assert len(receiver.requests) == 1


def test_the_sockets_own_timeout_ending_the_wait_first_is_the_same_timeout(
    receivers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket's timeout (the time left at connect) and the watchdog's timer end a silent
    receiver's wait at the same moment; whichever is first, the answer is the timeout's."""
    from comfyburst.adapters import webhook_http

    monkeypatch.setattr(webhook_http._Watchdog, "_fire", lambda self: None)  # never first
    receiver = receivers(silent)
    answer, took_s = _post(receiver.url)
    assert isinstance(answer, DeliveryFailed), answer
    assert "within 2.0 s" in answer.message
    assert TIMEOUT_S - 0.1 <= took_s <= TIMEOUT_S + SLACK_S, took_s


def _unresolved(host: str, port: int) -> list[str]:
    raise UrlRefused(f"{host} does not resolve: [Errno -3] Temporary failure in name resolution")


def _slow_lookup(host: str, port: int) -> list[str]:
    time.sleep(TIMEOUT_S * 3)  # a name server that holds its answer (in the lookup thread)
    return ["93.184.216.34"]


@pytest.mark.parametrize("resolver", [_unresolved, _slow_lookup], ids=["unresolved", "slow"])
def test_a_lookup_that_fails_or_hangs_is_a_failed_attempt_within_the_timeout(
    resolver: Resolver,
) -> None:
    """Redelivered (DeliveryFailed), not refused as a bad URL: a receiver's DNS comes back;
    and the lookup counts against the attempt's one deadline."""
    sender = HttpWebhookSender(resolver=resolver)
    began = time.monotonic()
    with pytest.raises(DeliveryFailed):
        sender.post("https://hooks.example.com/in", b"{}", {}, TIMEOUT_S)
    assert time.monotonic() - began <= TIMEOUT_S + SLACK_S


def test_a_name_resolving_to_a_refused_address_is_still_a_refused_url() -> None:
    sender = HttpWebhookSender(resolver=lambda host, port: ["10.0.0.7"])
    with pytest.raises(InvalidRequest) as refused:
        sender.post("https://hooks.example.com/in", b"{}", {}, TIMEOUT_S)
    assert refused.value.field == "webhook_url"


def test_a_tls_handshake_dripped_a_byte_at_a_time_ends_at_the_deadline() -> None:
    from comfyburst.adapters.webhook_http import _attempt, _TimedOut
    from comfyburst.domain.request_policy import WebhookTarget

    # A TLS record header announcing 64 bytes, then those bytes, one per 0.5 s. (CPython
    # already bounds one handshake as a whole; this keeps the https path's bound checked.
    # https never reaches loopback through the URL rule, so the attempt gets the address.)
    record = b"\x16\x03\x03\x00\x40" + bytes(64)
    receiver = Receiver(lambda r, conn: r.drip(conn, record), read_request=False)
    try:
        target = WebhookTarget("https", "hooks.example.com", receiver.port, "/in")
        began = time.monotonic()
        with pytest.raises(_TimedOut):
            _attempt(target, "127.0.0.1", b"{}", {}, began + TIMEOUT_S)
        took_s = time.monotonic() - began
    finally:
        receiver.close()
    assert TIMEOUT_S - 0.1 <= took_s <= TIMEOUT_S + SLACK_S, took_s


def test_the_body_is_never_waited_for(receivers: Any) -> None:
    receiver = receivers(drip_body)
    answer, took_s = _post(receiver.url)
    assert answer == 200
    assert took_s < TIMEOUT_S, took_s  # the dripped body would take 19.5 s


def test_a_huge_answer_body_is_never_read(receivers: Any) -> None:
    receiver = receivers(huge_body)
    answer, took_s = _post(receiver.url)
    assert answer == 200 and took_s < TIMEOUT_S, (answer, took_s)
    # The connection closed with the body unread: the receiver's writes failed after what the
    # loopback socket buffers hold, nowhere near its 256 MiB.
    assert receiver.answered.wait(10)
    assert receiver.sent < 64 * 1024 * 1024, receiver.sent


def test_the_request_carries_the_signed_headers_and_closes(receivers: Any) -> None:
    receiver = receivers(lambda r, conn: r.send(conn, ANSWER))
    sender = HttpWebhookSender(allow_loopback=True)
    headers = {"webhook-id": "msg_j_succeeded", "Content-Type": "application/json"}
    assert sender.post(receiver.url + "?k=v", b'{"a":1}', headers, TIMEOUT_S) == 200
    head = receiver.requests[0].decode().lower()
    assert head.startswith("post /hooks/in?k=v http/1.1\r\n")
    assert f"host: 127.0.0.1:{receiver.port}\r\n" in head
    assert "webhook-id: msg_j_succeeded\r\n" in head and "connection: close\r\n" in head


# --- through the on_result function (functions-framework) on the Firestore emulator ---------


@pytest.fixture
def on_result(job_store: Any) -> Iterator[Any]:
    import functions_framework

    from comfyburst import wiring
    from comfyburst.services.webhooks import DeliveryDeps

    app = functions_framework.create_app(
        target="on_result", source=str(MAIN_SOURCE), signature_type="cloudevent"
    )
    secrets = webhooks.parse_secrets([SECRET])
    deps = DeliveryDeps(
        job_store,
        HttpWebhookSender(allow_loopback=True),
        wiring.clock(),
        lambda: secrets,
        timeout_s=TIMEOUT_S,
    )
    sys.modules["main"].delivery_deps.set(deps)
    yield app.test_client()
    sys.modules["main"].delivery_deps.set(None)


def _push(client: Any, job_id: str) -> tuple[int, float]:
    """What the webhooks push subscription sends, as a binary-mode CloudEvent."""
    result = ResultMessage(job_id=job_id, status=JobState.SUCCEEDED, attempt=1)
    message = {
        "data": base64.b64encode(encode_result(result)).decode(),
        "attributes": result.attributes(),
        "messageId": f"m-{job_id}",
    }
    headers = {
        "ce-id": f"m-{job_id}",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/results",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    began = time.monotonic()
    response = client.post("/", data=json.dumps({"message": message}), headers=headers)
    return response.status_code, time.monotonic() - began


@pytest.mark.emulator
def test_hostile_receivers_hold_the_delivery_function_no_longer_than_its_timeout(
    on_result: Any, job_store: Any, receivers: Any
) -> None:
    dripping, huge = receivers(drip_headers), receivers(huge_body)
    job_store.create_job(make_job("wh-drip", dripping.url))
    job_store.create_job(make_job("wh-huge", huge.url))
    status, took_s = _push(on_result, "wh-drip")
    assert status == 500 and took_s <= TIMEOUT_S + SLACK_S, (status, took_s)  # redelivered
    status, took_s = _push(on_result, "wh-huge")
    assert status == 200 and took_s < TIMEOUT_S, (status, took_s)  # delivered: 200 came
    assert huge.answered.wait(10) and huge.sent < 64 * 1024 * 1024
    # (The session's reaper may publish these unpublished results too; its pushes come here
    # through the local cloud's own on_result, so a receiver may see more than one request.)
    assert dripping.requests and huge.requests
