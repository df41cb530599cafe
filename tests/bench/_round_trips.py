"""Counting round trips at the clients' transports: every gRPC call (Firestore) and every HTTP
request (Compute's REST, Cloud Storage's JSON API) this process makes, with when it began and
ended, so a submit's calls can be told apart as sequential or overlapped.

`install()` must run before the clients are built: it wraps `grpc.insecure_channel` (what the
Firestore client opens towards the emulator) with an interceptor, and `requests.Session.send`
(what the Compute and Storage clients send through). Recording is off until `Trace.armed`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Call:
    service: str  # firestore, compute, gcs, other
    what: str  # the RPC, or the HTTP method and the path's last parts
    began: float
    ended: float


@dataclass
class Trace:
    """The calls made while armed (one submit at a time: they are all that submit's)."""

    endpoints: dict[str, str] = field(default_factory=dict)  # host:port -> service
    calls: list[Call] = field(default_factory=list)
    armed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, service: str, what: str, began: float, ended: float) -> None:
        if self.armed:
            with self.lock:
                self.calls.append(Call(service, what, began, ended))

    def take(self) -> list[Call]:
        with self.lock:
            calls, self.calls = sorted(self.calls, key=lambda c: c.began), []
        return calls


def sequential_chain(calls: list[Call]) -> list[Call]:
    """The longest chain of calls each beginning after the previous one ended: the round trips
    a caller waits for one after another (the others overlapped with them)."""
    ordered = sorted(calls, key=lambda c: c.ended)
    best: list[list[Call]] = []
    for index, call in enumerate(ordered):
        before = [best[i] for i in range(index) if ordered[i].ended <= call.began]
        chain = max(before, key=len, default=[])
        best.append([*chain, call])
    return max(best, key=len, default=[])


def summary(calls: list[Call]) -> dict[str, Any]:
    """Counts by service and call, the sequential chain and how many overlapped with it."""
    chain = sequential_chain(calls)
    return {
        "calls": len(calls),
        "sequential": len(chain),
        "overlapped": len(calls) - len(chain),
        "chain": " -> ".join(f"{c.service}.{c.what}" for c in chain),
        "by_call": dict(Counter(f"{c.service}.{c.what}" for c in calls)),
    }


def _http_what(method: str, url: str) -> str:
    path = urlsplit(url).path.rstrip("/").split("/")
    tail = path[-1] if path else ""
    if tail in ("start", "stop", "setMetadata", "insert", "delete"):
        return f"{method} {tail}"
    if "aggregated" in path:
        return f"{method} instances list"
    if "instances" in path:
        return f"{method} instance"
    if "o" in path or "upload" in path:
        return f"{method} object"
    return f"{method} {tail}"


def install(trace: Trace) -> None:
    """Wrap the gRPC channel factory and requests' send, recording into `trace`."""
    import grpc
    import requests

    class _Interceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def _timed(self, continuation: Any, details: Any, request: Any) -> Any:
            began = time.perf_counter()
            call = continuation(details, request)
            rpc = str(details.method).rsplit("/", 1)[-1]
            call.add_done_callback(
                lambda _c: trace.record("firestore", rpc, began, time.perf_counter())
            )
            return call

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return self._timed(continuation, details, request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return self._timed(continuation, details, request)

    plain_channel = grpc.insecure_channel

    def insecure_channel(target: str, *args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(plain_channel(target, *args, **kwargs), _Interceptor())

    grpc.insecure_channel = insecure_channel  # type: ignore[assignment]

    send = requests.Session.send

    def timed_send(self: Any, request: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return send(self, request, **kwargs)
        finally:
            netloc = urlsplit(request.url).netloc
            service = trace.endpoints.get(netloc, "other")
            trace.record(
                service, _http_what(request.method, request.url), began, time.perf_counter()
            )

    requests.Session.send = timed_send  # type: ignore[method-assign]
