"""WebhookSender over the one pinned transport (`adapters/pinned_http.py`): the webhook URL rule
(`request_policy.check_webhook_url`) admits the URL, then a session for exactly that host checks
every address the name resolves to with the one address rule (`domain/urls.py`) and connects
to the address it checked; TLS still verifies the certificate for the name. A loopback
receiver (local cloud only) is that rule's test entry, whose addresses must be loopback.

No redirects are followed and nothing is retried here: Pub/Sub redelivers.
"""

from __future__ import annotations

import requests

from comfyburst.adapters.pinned_http import Resolver, pinned_session, system_resolver
from comfyburst.domain.request_policy import check_webhook_url
from comfyburst.domain.urls import UrlRefused, UrlRule
from comfyburst.errors import DeliveryFailed, InvalidRequest

CONNECT_TIMEOUT_S = 5.0


class HttpWebhookSender:
    def __init__(
        self, *, allow_loopback: bool = False, resolver: Resolver = system_resolver
    ) -> None:
        self._allow_loopback = allow_loopback
        self._resolver = resolver

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        target = check_webhook_url(url, allow_loopback=self._allow_loopback)
        if target.scheme == "https":
            rule = UrlRule.of([target.host])
        else:  # a loopback receiver the webhook rule admitted
            rule = UrlRule.of([], test_hostports=[f"{target.host}:{target.port}"])
        with pinned_session(rule, self._resolver) as session:
            try:
                response = session.post(
                    url,
                    data=body,
                    headers={**headers, "User-Agent": "ComfyBurst-Webhooks/1"},
                    timeout=(min(timeout_s, CONNECT_TIMEOUT_S), timeout_s),
                    allow_redirects=False,
                )
            except (UrlRefused, requests.exceptions.InvalidURL) as exc:
                # requests re-raises the rule's refusal as InvalidURL (the refusal as context).
                refusal = exc.__context__ if isinstance(exc.__context__, UrlRefused) else exc
                raise InvalidRequest(f"webhook URL: {refusal}", field="webhook_url") from None
            except requests.RequestException as exc:
                raise DeliveryFailed(f"webhook receiver did not answer: {exc}") from None
            response.close()
            return int(response.status_code)
