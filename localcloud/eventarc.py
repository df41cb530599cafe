"""Local Eventarc stand-in: GCS notifications (Pub/Sub) -> storage CloudEvents over HTTP.

Pulls fake-gcs-server's object notifications, keeps those of one bucket, and POSTs each as the
binary-mode CloudEvent `google.cloud.storage.object.v1.finalized` that a storage trigger gets
in the cloud. A message is acked only after a 2xx; on a 5xx (or no answer) it is left for
redelivery after a growing delay, as Eventarc retries an event function with retries on.

Run: `python -m localcloud.eventarc --subscription projects/P/subscriptions/S --bucket B
--target URL` with PUBSUB_EMULATOR_HOST set.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from datetime import UTC, datetime
from typing import Any

import requests

log = logging.getLogger("localcloud.eventarc")

_EVENT_TYPES = {
    "OBJECT_FINALIZE": "google.cloud.storage.object.v1.finalized",
    "OBJECT_DELETE": "google.cloud.storage.object.v1.deleted",
    "OBJECT_ARCHIVE": "google.cloud.storage.object.v1.archived",
    "OBJECT_METADATA_UPDATE": "google.cloud.storage.object.v1.metadataUpdated",
}
# int64 fields of the JSON API object resource arrive as strings in the cloud's events.
_INT64_FIELDS = ("generation", "metageneration", "size")
_MAX_BACKOFF_S = 60


def to_cloudevent(
    data: bytes, attributes: dict[str, str], message_id: str
) -> tuple[dict[str, str], bytes]:
    """The binary-mode headers and body of the storage CloudEvent for one notification."""
    obj: dict[str, Any] = json.loads(data) if data else {}
    for key in _INT64_FIELDS:
        if key in obj and obj[key] is not None:
            obj[key] = str(obj[key])
    bucket = attributes.get("bucketId") or obj.get("bucket", "")
    name = attributes.get("objectId") or obj.get("name", "")
    event_type = _EVENT_TYPES.get(attributes.get("eventType", ""), _EVENT_TYPES["OBJECT_FINALIZE"])
    time = attributes.get("eventTime") or obj.get("updated") or datetime.now(UTC).isoformat()
    headers = {
        "ce-specversion": "1.0",
        "ce-id": message_id,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "ce-type": event_type,
        "ce-subject": f"objects/{name}",
        "ce-time": time,
        "Content-Type": "application/json",
    }
    return headers, json.dumps(obj).encode()


class EventarcBridge:
    """Delivers finalize events of one bucket from a pull subscription to an HTTP target."""

    def __init__(
        self,
        subscriber: Any,
        subscription_path: str,
        bucket: str,
        target_url: str,
        session: requests.Session | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self._subscriber = subscriber
        self._subscription = subscription_path
        self._bucket = bucket
        self._target = target_url
        self._session = session or requests.Session()
        self._timeout_s = timeout_s
        self._failures: dict[str, int] = {}
        self.delivered = 0

    def _wanted(self, attributes: dict[str, str]) -> bool:
        # Eventarc storage triggers filter by bucket and event type only.
        return (
            attributes.get("bucketId") == self._bucket
            and attributes.get("eventType", "OBJECT_FINALIZE") == "OBJECT_FINALIZE"
        )

    def _post(self, headers: dict[str, str], body: bytes) -> int | None:
        try:
            response = self._session.post(
                self._target, data=body, headers=headers, timeout=self._timeout_s
            )
        except requests.RequestException as exc:
            log.warning("delivery to %s failed: %s", self._target, exc)
            return None
        return response.status_code

    def pump_once(self, timeout_s: float = 5.0) -> int:
        """Pull one batch, deliver it, ack what is done; returns how many were pulled."""
        response = self._subscriber.pull(
            request={"subscription": self._subscription, "max_messages": 20},
            timeout=timeout_s,
            retry=None,  # the loop retries; the client's own retry would outlive a stop
        )
        done: list[str] = []
        for received in response.received_messages:
            message = received.message
            attributes = dict(message.attributes)
            if not self._wanted(attributes):
                done.append(received.ack_id)
                continue
            headers, body = to_cloudevent(message.data, attributes, message.message_id)
            status = self._post(headers, body)
            if status is not None and 200 <= status < 300:
                self._failures.pop(message.message_id, None)
                self.delivered += 1
                done.append(received.ack_id)
            elif status is not None and 400 <= status < 500 and status not in (408, 429):
                # A rejected event is not retried (the function said it is bad input).
                log.warning("%s rejected %s with %s", self._target, headers["ce-subject"], status)
                done.append(received.ack_id)
            else:
                self._redeliver_later(received.ack_id, message.message_id, status)
        if done:
            self._subscriber.acknowledge(
                request={"subscription": self._subscription, "ack_ids": done}
            )
        return len(response.received_messages)

    def _redeliver_later(self, ack_id: str, message_id: str, status: int | None) -> None:
        failures = self._failures.get(message_id, 0) + 1
        self._failures[message_id] = failures
        delay_s = min(2 ** (failures - 1), _MAX_BACKOFF_S)
        log.warning("event %s got %s; retry #%d in %ss", message_id, status, failures, delay_s)
        self._subscriber.modify_ack_deadline(
            request={
                "subscription": self._subscription,
                "ack_ids": [ack_id],
                "ack_deadline_seconds": delay_s,
            }
        )

    def run(self, stop: threading.Event) -> None:
        """Pump until `stop` is set."""
        from google.api_core import exceptions as gexc

        while not stop.is_set():
            try:
                # A short pull, so a stop request is seen within about a second.
                if self.pump_once(timeout_s=1.0) == 0:
                    stop.wait(0.05)  # the emulator answers an empty pull at once
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                stop.wait(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localcloud.eventarc")
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from google.cloud import pubsub_v1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with pubsub_v1.SubscriberClient() as subscriber:
        bridge = EventarcBridge(subscriber, args.subscription, args.bucket, args.target)
        print(f"READY {args.subscription} -> {args.target}", flush=True)
        bridge.run(stop)


if __name__ == "__main__":
    main()
