"""HTTP(S) that connects only to checked addresses (requests + urllib3, nothing hand-written).

`PinnedAdapter` checks each request's URL with the one rule (`domain/urls.py`), resolves its
host once, checks every address, and has urllib3 connect to the first one: the pool's host is
that address, while `server_hostname`/`assert_hostname` keep SNI and certificate verification
for the name and the Host header carries the name. A redirect followed by requests passes the
adapter again, so every hop is checked. `pinned_connection` does the same for a bare
keep-alive connection (the worker's ranged downloads).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.certs
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util.ssl_ import create_urllib3_context

from comfyburst.domain.urls import Target, UrlRefused, UrlRule, check_address, check_url

# (host, port) -> the addresses it resolves to; tests inject their own.
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """The system's answer for `host`, each address once, in its order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UrlRefused(f"{host} does not resolve: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_address(target: Target, resolver: Resolver) -> str:
    """The address to connect to: every address of the host must pass, the first is used."""
    addresses = resolver(target.host, target.port)
    if not addresses:
        raise UrlRefused(f"{target.host} resolves to no address")
    for address in addresses:
        check_address(address, target)
    return addresses[0]


class PinnedAdapter(HTTPAdapter):
    """A transport adapter that refuses URLs the rule refuses and pins the checked address."""

    def __init__(self, rule: UrlRule, resolver: Resolver = system_resolver, **kwargs: Any) -> None:
        self.rule = rule
        self.resolver = resolver
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        # Redirect hosts are a superset: the caller checks the submitted URL more strictly.
        target = check_url(request.url or "", self.rule, redirect=True)
        host_params["host"] = checked_address(target, self.resolver)
        if target.scheme == "https":
            pool_kwargs["server_hostname"] = target.host
            pool_kwargs["assert_hostname"] = target.host
        return host_params, pool_kwargs

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        parts = urlsplit(request.url or "")
        request.headers["Host"] = parts.netloc.rpartition("@")[2]


def pinned_session(rule: UrlRule, resolver: Resolver = system_resolver) -> requests.Session:
    """A session whose every connection passes the rule and goes to a checked address."""
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc credentials from the environment
    adapter = PinnedAdapter(rule, resolver)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def pinned_connection(
    url: str, rule: UrlRule, timeout_s: float, resolver: Resolver = system_resolver
) -> HTTPConnection:
    """A keep-alive connection to `url`'s checked address (urllib3's; http.client compatible),
    verified against requests' CAs for the name when https."""
    target = check_url(url, rule, redirect=True)
    address = checked_address(target, resolver)
    if target.scheme == "https":
        context = create_urllib3_context()
        context.load_verify_locations(cafile=requests.certs.where())
        return HTTPSConnection(
            address,
            target.port,
            timeout=timeout_s,
            server_hostname=target.host,
            assert_hostname=target.host,
            ssl_context=context,
            cert_reqs="CERT_REQUIRED",
        )
    return HTTPConnection(address, target.port, timeout=timeout_s)
