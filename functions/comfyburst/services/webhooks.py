"""Webhook delivery: one result message from the webhooks subscription, one signed POST.

The subscription on the results topic pushes each result to the `on_result` function. Pub/Sub
owns the retries (exponential backoff from the subscription's retry policy) and the dead-letter
topic (its dead-letter policy); this use case only makes one attempt and says how it went:
returning means "acknowledge", raising `DeliveryFailed` means "deliver again later".

- The body is the result message exactly as published; the `webhook-id` is derived from
  job id + status, so every retry and every republish of one result carries the same id.
- A message that is not a result, a job that is gone, or a job without `webhook_url` is
  acknowledged (nothing to deliver; retrying cannot change that).
- The URL is checked again at delivery with the same rule as at submit, and the connection goes
  to the address that rule resolved and checked.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from comfyburst.domain.webhooks import WebhookSecret, webhook_headers, webhook_id
from comfyburst.errors import ComfyBurstError, DeliveryFailed
from comfyburst.ports import Clock, JobStore
from comfyburst.schema import ResultMessage

log = logging.getLogger(__name__)

MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


class WebhookSender(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        """POST to `url` (checked and pinned by the adapter); the status code. Raises
        DeliveryFailed when no answer came, InvalidRequest when the URL is not allowed."""
        ...


@dataclass(frozen=True)
class PubSubMessage:
    data: bytes
    attributes: dict[str, str]
    message_id: str


@dataclass
class DeliveryDeps:
    store: JobStore
    sender: WebhookSender
    clock: Clock
    secrets: Callable[[], Sequence[WebhookSecret]]
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    reason: str
    webhook_id: str | None = None
    status_code: int | None = None


def parse_pubsub_event(data: Any) -> PubSubMessage:
    """The Pub/Sub message of a `messagePublished` CloudEvent (Eventarc's shape, and what
    functions-framework makes of a push request): `data.message.{data, attributes,
    messageId}`, `data` being standard base64."""
    message = data.get("message") if isinstance(data, Mapping) else None
    if not isinstance(message, Mapping):
        raise ValueError("the event carries no Pub/Sub message")
    try:
        body = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("the Pub/Sub message data is not base64") from None
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise ValueError("the Pub/Sub message attributes are not an object")
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    return PubSubMessage(body, {str(k): str(v) for k, v in attributes.items()}, message_id)


def deliver(deps: DeliveryDeps, message: PubSubMessage) -> Outcome:
    """One delivery attempt of one result message. Raises DeliveryFailed to be retried."""
    try:
        result = ResultMessage.model_validate(json.loads(message.data))
    except (ValueError, ValidationError):
        log.warning("not a result message; dropped", extra={"message_id": message.message_id})
        return Outcome(False, "not_a_result")
    if not result.status.terminal:
        return Outcome(False, "not_terminal")
    job = deps.store.get_job(result.job_id)
    if job is None:
        return Outcome(False, "job_gone")
    if not job.webhook_url:
        return Outcome(False, "no_webhook")
    msg_id = webhook_id(result.job_id, result.status.value)
    secrets = deps.secrets()
    if not secrets:
        # A deployment fault, not the receiver's: keep the message until a secret is set.
        raise DeliveryFailed("no webhook signing secret is configured")
    timestamp_s = int(deps.clock.now().timestamp())
    headers = webhook_headers(secrets, msg_id, timestamp_s, message.data)
    extra = {"job_id": result.job_id, "webhook_id": msg_id}
    try:
        status_code = deps.sender.post(job.webhook_url, message.data, headers, deps.timeout_s)
    except DeliveryFailed:
        log.warning("webhook receiver did not answer", extra=extra, exc_info=True)
        raise
    except ComfyBurstError as exc:
        # The URL no longer passes the rule (e.g. its name now resolves to a private
        # address): retrying cannot make it pass, so the message is acknowledged.
        log.warning("webhook URL refused at delivery: %s", exc.message, extra=extra)
        return Outcome(False, "url_refused", msg_id)
    if 200 <= status_code < 300:
        log.info("webhook delivered", extra={**extra, "status_code": status_code})
        return Outcome(True, "delivered", msg_id, status_code)
    raise DeliveryFailed(f"webhook receiver answered {status_code}", details=extra)
