"""PubSubPublisher, fake-gcs object notifications and the local Eventarc stand-in."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from localcloud.eventarc import EventarcBridge
from tests._poll import poll_until

pytestmark = pytest.mark.emulator


@pytest.fixture
def fresh_subscription(subscriber, localcloud_env) -> Iterator[Callable[[str], str]]:
    """Creates subscriptions (on a topic id) that are deleted after the test."""
    project = localcloud_env["COMFYBURST_PROJECT_ID"]
    made: list[str] = []

    def make(topic: str) -> str:
        path = subscriber.subscription_path(project, f"test-{uuid.uuid4().hex[:12]}")
        topic_path = f"projects/{project}/topics/{topic}"
        subscriber.create_subscription(request={"name": path, "topic": topic_path})
        made.append(path)
        return path

    yield make
    for path in made:
        subscriber.delete_subscription(request={"subscription": path})


def pull_until(subscriber, path: str, match: Callable[[Any], bool]) -> Any:
    def check() -> Any:
        response = subscriber.pull(request={"subscription": path, "max_messages": 50}, timeout=5)
        found = None
        for received in response.received_messages:
            if match(received.message):
                found = received.message
        if response.received_messages:
            ack_ids = [r.ack_id for r in response.received_messages]
            subscriber.acknowledge(request={"subscription": path, "ack_ids": ack_ids})
        return found

    return poll_until(check, "a matching message")


def test_publish_with_attributes_reaches_a_subscription(
    publisher, subscriber, fresh_subscription, function_settings
) -> None:
    path = fresh_subscription(function_settings.results_topic)
    job_id = uuid.uuid4().hex
    message_id = publisher.publish(b'{"ok": true}', {"job_id": job_id, "status": "succeeded"})
    assert message_id
    message = pull_until(subscriber, path, lambda m: m.attributes.get("job_id") == job_id)
    assert message.data == b'{"ok": true}'
    assert dict(message.attributes) == {"job_id": job_id, "status": "succeeded"}
    assert message.message_id == message_id


def test_upload_produces_an_object_finalize_notification(
    blob_store, subscriber, fresh_subscription, function_settings, localcloud_env
) -> None:
    path = fresh_subscription(localcloud_env["COMFYBURST_LOCAL_GCS_TOPIC"])
    name = f"jobs/{uuid.uuid4().hex}/done.json"
    gen = blob_store.write(function_settings.signals_bucket, name, b"{}", "application/json")
    message = pull_until(subscriber, path, lambda m: m.attributes.get("objectId") == name)
    assert message.attributes["eventType"] == "OBJECT_FINALIZE"
    assert message.attributes["bucketId"] == function_settings.signals_bucket
    assert message.attributes["payloadFormat"] == "JSON_API_V1"
    assert int(json.loads(message.data)["generation"]) == gen


class _Receiver(BaseHTTPRequestHandler):
    """Records POSTs; answers the statuses queued in `server.statuses` (then 204)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server: Any = self.server
        server.received.append((dict(self.headers), body))
        status = server.statuses.pop(0) if server.statuses else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received, server.statuses = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_eventarc_standin_delivers_the_cloud_shaped_event(
    blob_store, subscriber, fresh_subscription, function_settings, localcloud_env, receiver
) -> None:
    path = fresh_subscription(localcloud_env["COMFYBURST_LOCAL_GCS_TOPIC"])
    signals = function_settings.signals_bucket
    url = f"http://127.0.0.1:{receiver.server_address[1]}/"
    bridge = EventarcBridge(subscriber, path, signals, url)
    receiver.statuses = [503]  # the first delivery fails and must be retried
    job = uuid.uuid4().hex
    blob_store.write(function_settings.jobs_bucket, f"jobs/{job}/request.json", b"{}")
    gen = blob_store.write(signals, f"jobs/{job}/done.json", b'{"a": 1}', "application/json")

    def delivered() -> bool:
        bridge.pump_once(timeout_s=2)
        return len(receiver.received) >= 2

    poll_until(delivered, "a redelivered event", timeout_s=30)
    (first_headers, _), (headers, body) = receiver.received[:2]
    assert first_headers["ce-id"] == headers["ce-id"]
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized"
    assert headers["ce-source"] == f"//storage.googleapis.com/projects/_/buckets/{signals}"
    assert headers["ce-subject"] == f"objects/jobs/{job}/done.json"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-time"]
    event = json.loads(body)
    assert event["name"] == f"jobs/{job}/done.json"
    assert event["bucket"] == signals
    assert event["generation"] == str(gen)  # int64 fields are strings, as in the cloud
    assert event["size"] == "8"
    # Only the signals bucket is delivered, and the acked event does not come back.
    for _ in range(3):
        bridge.pump_once(timeout_s=1)
    assert len(receiver.received) == 2
    assert bridge.delivered == 1
