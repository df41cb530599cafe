"""Publisher port over google-cloud-pubsub."""

from __future__ import annotations

from typing import Any


class PubSubPublisher:
    """Publishes to one topic and waits until the server accepted each message."""

    def __init__(self, publisher_client: Any, topic_path: str, timeout_s: float = 30.0) -> None:
        self._client = publisher_client
        self._topic_path = topic_path
        self._timeout_s = timeout_s

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        future = self._client.publish(self._topic_path, data, **attributes)
        # A function instance may be frozen right after it returns: wait for the ack.
        return str(future.result(timeout=self._timeout_s))
