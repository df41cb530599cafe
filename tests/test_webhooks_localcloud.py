"""Webhooks on the local cloud: results published to the results topic reach a loopback receiver
through the webhooks push subscription and the on_result function, signed; the Pub/Sub
emulator applies the subscription's retry and dead-letter policies.

The receiver verifies every delivery with the Standard Webhooks verifier of
tests/test_webhooks.py (written from the specification) and dedupes on `webhook-id`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from comfyburst.client import ApiClient, ClientSettings
from comfyburst.schema import Job
from comfyburst.services.results import publish_result
from comfyburst.states import JobState
from localcloud._procs import free_port
from localcloud.config import WEBHOOKS_DEAD_LETTER_SUBSCRIPTION
from tests._e2e_support import invert_workflow
from tests._poll import poll_until
from tests.test_webhooks import make_job, verify

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# Redelivery is the emulator's: this cloud's webhooks subscription has the dead-letter policy
# and no retry policy, so the emulator pushes a refused message again about every second until
# max attempts. With a retry policy the emulator stops pushing after 3-4 attempts whenever two
# or more messages are being retried (measured; localcloud/config.py, LocalCloudConfig), which
# is why these tests were once skipped. The backoff as deployed is checked in
# tests/test_webhooks_deploy.py.

# The on_result function's default receiver timeout is 10 s; a slow answer takes longer.
SLOW_ANSWER_S = 12.0


@pytest.fixture(scope="module")
def webhook_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's own cloud (VMs run the worker and the ComfyUI stand-in): the push
    subscription's retries and dead-lettering are timed here, so no other test's results may
    be queued on it (the emulator pushes every result, and wipes leave Pub/Sub as it is)."""
    from localcloud.cloud import LocalCloud
    from localcloud.scenarios.harness import cloud_config, warm_up

    # Ten attempts, as deployed: the faulty-receivers test starts its late receiver after two
    # refusals, and the attempts left are its margin on a busy machine.
    config = cloud_config(tmp_path_factory.mktemp("webhooks"), pool_size=1)
    running = LocalCloud(replace(config, webhook_max_delivery_attempts=10))
    running.start()
    try:
        warm_up(running.env)
        yield running
    finally:
        running.stop()


@pytest.fixture
def localcloud_env(webhook_cloud: Any) -> dict[str, str]:
    """This module's cloud (conftest's autouse wipe wipes it between tests)."""
    return dict(webhook_cloud.env)


@pytest.fixture
def cloud_env(localcloud_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in localcloud_env.items():
        monkeypatch.setenv(name, value)
    return localcloud_env


class Receiver:
    """A loopback webhook receiver; `answer(job_id, attempt)` picks each answer."""

    def __init__(self, secret: str, answer: Callable[[str, int], str], port: int = 0) -> None:
        self.secret = secret
        self.answer = answer
        self.port = port or free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.invalid: list[dict[str, str]] = []
        self.accepted: list[tuple[str, bytes]] = []  # answered 2xx
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/comfyburst"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                valid = verify(receiver.secret, headers, body, int(time.time()))
                job_id = json.loads(body)["job_id"] if valid else ""
                with receiver._lock:
                    if not valid:
                        receiver.invalid.append(headers)
                    attempt = sum(1 for h, _b in receiver.received if h_job(h) == job_id) + 1
                    receiver.received.append(({**headers, "x-job": job_id}, body))
                action = receiver.answer(job_id, attempt) if valid else "401"
                if action == "slow":
                    time.sleep(SLOW_ANSWER_S)
                    action = "204"
                if action.startswith("2"):
                    with receiver._lock:
                        receiver.accepted.append((headers["webhook-id"], body))
                self.send_response(int(action))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def unique(self) -> dict[str, bytes]:
        """Accepted deliveries after dedupe on webhook-id (a receiver's side of at-least-once)."""
        with self._lock:
            return dict(self.accepted)

    def ids_seen(self) -> set[str]:
        with self._lock:
            return {h["webhook-id"] for h, _b in self.received}

    def attempts(self, job_id: str) -> int:
        with self._lock:
            return sum(1 for h, _b in self.received if h_job(h) == job_id)


def h_job(headers: dict[str, str]) -> str:
    return headers.get("x-job", "")


@pytest.fixture
def wiring_parts(cloud_env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    from comfyburst import wiring
    from comfyburst.settings import FunctionSettings

    settings = FunctionSettings()
    yield wiring.job_store(settings), wiring.publisher(settings)


def _refusals(cloud: Any, job_id: str) -> int:
    """Deliveries of `job_id` whose receiver did not answer, from on_result's JSON log."""
    (service,) = [s for s in cloud.services if s.name == "fn-on_result"]
    count = 0
    for line in service.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and "webhook receiver did not answer" in line:
            entry = json.loads(line)
            count += entry.get("job_id") == job_id
    return count


def _publish(store: Any, publisher: Any, job: Job) -> None:
    """A terminal job and its result on the results topic, as the completion path does."""
    store.create_job(job)
    publish_result(store, publisher, job, datetime.now(UTC))


# The dead-letter test runs first: the faulty-receivers test leaves redeliveries of its own
# messages in flight (to receivers it has stopped), which share the push subscription.
def test_receivers_that_never_recover_end_on_the_dead_letter_topic(
    cloud_env: dict[str, str], wiring_parts: tuple[Any, Any]
) -> None:
    """Two refused at once, each through every attempt: the case the emulator's retry policy
    stalls on (LocalCloudConfig), so this fails on a subscription with one."""
    from google.cloud import pubsub_v1

    store, publisher = wiring_parts
    subscriber = pubsub_v1.SubscriberClient()
    receiver = Receiver(cloud_env["COMFYBURST_WEBHOOK_SECRET"], lambda _j, _a: "503").start()
    subscription = subscriber.subscription_path(
        cloud_env["COMFYBURST_PROJECT_ID"], WEBHOOKS_DEAD_LETTER_SUBSCRIPTION
    )
    jobs = {"wh-dead-1": JobState.FAILED, "wh-dead-2": JobState.TIMED_OUT}
    found: dict[str, dict[str, str]] = {}

    def dead_lettered() -> bool:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 50}, timeout=5
        )
        ack_ids = []
        for received in response.received_messages:
            ack_ids.append(received.ack_id)
            attributes = dict(received.message.attributes)
            if attributes.get("job_id") in jobs:
                found[attributes["job_id"]] = attributes
        if ack_ids:
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})
        return found.keys() == jobs.keys()

    try:
        for job_id, state in jobs.items():
            _publish(store, publisher, make_job(job_id, receiver.url, state))
        poll_until(dead_lettered, "both messages dead-lettered", timeout_s=120, interval_s=0.2)
    finally:
        receiver.stop()
        subscriber.close()
    for job_id, state in jobs.items():
        assert found[job_id]["status"] == state.value
        assert found[job_id].get("CloudPubSubDeadLetterSourceSubscription")
        assert receiver.attempts(job_id) >= 2
    assert receiver.invalid == [] and receiver.unique() == {}
    # One id on every attempt.
    assert receiver.ids_seen() == {f"msg_{j}_{s.value}" for j, s in jobs.items()}


def test_faulty_receivers_get_every_result_once_after_dedupe(
    cloud_env: dict[str, str], wiring_parts: tuple[Any, Any], webhook_cloud: Any
) -> None:
    store, publisher = wiring_parts
    secret = cloud_env["COMFYBURST_WEBHOOK_SECRET"]
    assert secret.startswith("whsec_")

    def answer(job_id: str, attempt: int) -> str:
        if job_id.startswith("wh-500") and attempt <= 2:
            return "500"
        if job_id.startswith("wh-slow") and attempt == 1:
            return "slow"
        return "204"

    up = Receiver(secret, answer).start()
    late = Receiver(secret, answer)  # down: nothing listens on its port for a while
    try:
        jobs = {
            "wh-ok": (up, JobState.SUCCEEDED),
            "wh-500": (up, JobState.FAILED),
            "wh-down": (late, JobState.TIMED_OUT),
        }
        for job_id, (receiver, state) in jobs.items():
            _publish(store, publisher, make_job(job_id, receiver.url, state))
        # Down while the emulator redelivers: the function was refused a connection twice.
        poll_until(
            lambda: _refusals(webhook_cloud, "wh-down") >= 2,
            "two deliveries to the down receiver",
            timeout_s=90,
            interval_s=0.2,
        )
        assert late.attempts("wh-down") == 0
        late.start()
        expected_up = {f"msg_{j}_{s.value}" for j, (r, s) in jobs.items() if r is up}
        poll_until(
            lambda: set(up.unique()) == expected_up,
            "every up delivery",
            timeout_s=90,
            interval_s=0.2,
        )
        poll_until(
            lambda: set(late.unique()) == {"msg_wh-down_timed_out"},
            "the late receiver's delivery",
            timeout_s=90,
            interval_s=0.2,
        )
        # The slow receiver after the others: while a push hangs until its deadline, the
        # Pub/Sub emulator was seen to drop the redeliveries it had scheduled meanwhile (a down
        # receiver's, three attempts in, never pushed again within 90 s), which Pub/Sub in the
        # cloud does not do. Each fault is still met; they just do not overlap.
        _publish(store, publisher, make_job("wh-slow", up.url, JobState.SUCCEEDED))
        poll_until(
            lambda: "msg_wh-slow_succeeded" in up.unique(),
            "the slow receiver's delivery",
            timeout_s=90,
            interval_s=0.2,
        )
    finally:
        up.stop()
        late.stop()
    assert up.invalid == [] and late.invalid == []
    # At least once: a copy may come twice (e.g. a push retried while the first was in
    # flight); the receiver's dedupe on webhook-id makes each job's notice one.
    assert up.attempts("wh-500") >= 3  # two 500s, then taken
    assert up.attempts("wh-slow") >= 2  # the slow answer timed out and was sent again
    for receiver in (up, late):
        for webhook_id, body in receiver.unique().items():
            result = json.loads(body)
            assert webhook_id == f"msg_{result['job_id']}_{result['status']}"
    # Every copy of one delivery carries the same bytes.
    with up._lock:
        slow_bodies = {b for h, b in up.received if h_job(h) == "wh-slow"}
    assert len(slow_bodies) == 1


def test_a_real_job_notifies_its_webhook(cloud_env: dict[str, str]) -> None:
    receiver = Receiver(cloud_env["COMFYBURST_WEBHOOK_SECRET"], lambda _j, _a: "200").start()
    client = ApiClient(ClientSettings(api_url=cloud_env["COMFYBURST_API_URL"], auth="none"))
    try:
        job = client.submit(
            {
                "workflow": invert_workflow(),
                "options": {"timeout_s": 200},
                "webhook_url": receiver.url,
            }
        )
        assert job["webhook_url"] == receiver.url
        # The client waits on the server (GET /jobs/{id}?wait_s), not in a poll loop.
        done = client.wait(job["job_id"], timeout_s=200)
        assert done["state"] == "succeeded", done.get("error")
        expected = f"msg_{job['job_id']}_succeeded"
        poll_until(lambda: expected in receiver.unique(), expected, timeout_s=60, interval_s=0.2)
    finally:
        receiver.stop()
    result = json.loads(receiver.unique()[expected])
    assert result["status"] == "succeeded" and result["outputs"]
