"""WebhookSender over urllib3: check the URL, resolve its name, check every address, and POST to
the address that was checked (no second lookup a DNS rebinding could answer differently).

TLS still verifies the certificate for the URL's host name (SNI and hostname check use the
name, the TCP connection uses the pinned address). No redirects are followed and nothing is
retried here: Pub/Sub redelivers.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import certifi
import urllib3

from comfyburst.domain.request_policy import check_webhook_address, check_webhook_url
from comfyburst.errors import InvalidRequest
from comfyburst.services.webhooks import DeliveryFailed

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address the name resolves to (one getaddrinfo call)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HttpWebhookSender:
    def __init__(self, *, allow_loopback: bool = False, resolver: Resolver = resolve) -> None:
        self._allow_loopback = allow_loopback
        self._resolve = resolver

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        target = check_webhook_url(url, allow_loopback=self._allow_loopback)
        try:
            addresses = self._resolve(target.host.strip("[]"), target.port)
        except OSError as exc:
            raise DeliveryFailed(f"cannot resolve the webhook host: {exc}") from None
        if not addresses:
            raise DeliveryFailed("the webhook host resolves to no address")
        for address in addresses:
            # Every address must pass: the connection below may use any of them.
            check_webhook_address(address, allow_loopback=self._allow_loopback)
        pool = self._pool(target.scheme, target.host, addresses[0], target.port, timeout_s)
        host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        try:
            response = pool.urlopen(
                "POST",
                target.path,
                body=body,
                headers={**headers, "Host": host_header, "User-Agent": "ComfyBurst-Webhooks/1"},
                redirect=False,
                retries=False,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise DeliveryFailed(f"webhook receiver did not answer: {exc}") from None
        finally:
            pool.close()
        status = int(response.status)
        response.release_conn()
        return status

    @staticmethod
    def _pool(
        scheme: str, host: str, address: str, port: int, timeout_s: float
    ) -> urllib3.HTTPConnectionPool:
        timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
        if scheme == "https":
            return urllib3.HTTPSConnectionPool(
                address,
                port,
                timeout=timeout,
                maxsize=1,
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
                server_hostname=host,
                assert_hostname=host,
            )
        if scheme == "http":
            return urllib3.HTTPConnectionPool(address, port, timeout=timeout, maxsize=1)
        raise InvalidRequest(f"webhook URL must use https://, not {scheme}", field="webhook_url")
