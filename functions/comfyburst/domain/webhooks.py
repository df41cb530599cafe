"""Webhook signing as the Standard Webhooks specification writes it. Pure: no I/O, no clock.

- Headers: `webhook-id` (the same on every retry of one message), `webhook-timestamp` (integer
  Unix seconds of the attempt), `webhook-signature`.
- Signed content: `{id}.{timestamp}.{body}` with the body's exact bytes.
- Signature: `v1,` + standard base64 of HMAC-SHA256 over the signed content, keyed with the
  secret's bytes; a secret is written `whsec_` + base64 of those bytes.
- Rotation: every configured secret signs; the signatures are space-separated, so a receiver
  holding either the new or the old secret verifies during the switch.

The id of a job's delivery is derived from job id + terminal status, so a redelivery of the
same result (Pub/Sub retry, republished message) carries the same id and a receiver dedupes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix the specification gives secrets)
SIGNATURE_VERSION = "v1"
# The specification's suggestion: between 24 and 64 bytes of key.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
NEW_SECRET_BYTES = 32


class WebhookSecretInvalid(ValueError):
    """A configured signing secret is not `whsec_` + base64 of 24 to 64 bytes."""


@dataclass(frozen=True, repr=False)
class WebhookSecret:
    """A signing key; its repr never shows the key."""

    key: bytes

    @classmethod
    def parse(cls, text: str) -> WebhookSecret:
        if not text.startswith(SECRET_PREFIX):
            raise WebhookSecretInvalid(f"a webhook secret starts with {SECRET_PREFIX!r}")
        try:
            key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise WebhookSecretInvalid("a webhook secret is base64 after its prefix") from None
        if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
            raise WebhookSecretInvalid(
                f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
                f"not {len(key)}"
            )
        return cls(key)

    def __repr__(self) -> str:
        return "WebhookSecret(<redacted>)"

    def text(self) -> str:
        return SECRET_PREFIX + base64.b64encode(self.key).decode()


def new_secret_text() -> str:
    """A fresh `whsec_…` secret (for the local cloud and for operators rotating)."""
    return WebhookSecret(_secrets.token_bytes(NEW_SECRET_BYTES)).text()


def parse_secrets(texts: Iterable[str | None]) -> tuple[WebhookSecret, ...]:
    """The configured secrets, current first; blanks are skipped, duplicates kept once."""
    parsed: list[WebhookSecret] = []
    for text in texts:
        if text and text.strip():
            secret = WebhookSecret.parse(text.strip())
            if secret not in parsed:
                parsed.append(secret)
    return tuple(parsed)


def webhook_id(job_id: str, status: str) -> str:
    """The id of the delivery of one job's terminal result: stable across every retry."""
    return f"msg_{job_id}_{status}"


def signed_content(msg_id: str, timestamp_s: int, body: bytes) -> bytes:
    if "." in msg_id:
        # The id is the first dot-separated part of the signed content.
        raise ValueError("a webhook id must not contain '.'")
    return f"{msg_id}.{timestamp_s}.".encode() + body


def sign(secret: WebhookSecret, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    digest = hmac.new(secret.key, signed_content(msg_id, timestamp_s, body), hashlib.sha256)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest.digest()).decode()}"


def signature_header(
    secrets: Sequence[WebhookSecret], msg_id: str, timestamp_s: int, body: bytes
) -> str:
    """`webhook-signature`: one signature per secret, space-separated."""
    if not secrets:
        raise ValueError("no webhook signing secret is configured")
    return " ".join(sign(secret, msg_id, timestamp_s, body) for secret in secrets)


def webhook_headers(
    secrets: Sequence[WebhookSecret], msg_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    """The three headers of one delivery attempt (plus the body's content type)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature_header(secrets, msg_id, timestamp_s, body),
        "Content-Type": "application/json",
    }
