"""Which URLs a model may come from, and which credential goes to which host."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

# Names that resolve to the VM itself or to cloud-internal services (the metadata server
# hands out the VM's service-account tokens), whatever an allow-list says.
_BLOCKED_NAMES = ("localhost", "metadata", "metadata.google.internal")
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local")


def host_matches(host: str, allowed: str) -> bool:
    """`host` is `allowed` or one of its subdomains (cdn-lfs.huggingface.co for huggingface.co)."""
    host, allowed = host.lower().rstrip("."), allowed.lower().rstrip(".")
    return host == allowed or host.endswith("." + allowed)


def is_ip_literal(host: str) -> bool:
    """An IPv4/IPv6 address, including the short and numeric forms resolvers accept (127.1)."""
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        return False


def is_internal_name(host: str) -> bool:
    """A name for this machine or the cloud's internal network (single labels included)."""
    host = host.lower().rstrip(".")
    return host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES) or "." not in host


def public_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to store (no `?token=`)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class HostPolicy:
    """https to allow-listed hosts; plain http only to exact `host:port` (local tests).

    A redirect hop may also go to `redirect_hosts` (the CDNs behind Hugging Face and
    Civitai); the submitted URL may not, and tokens never go there.
    """

    https_hosts: tuple[str, ...] = ()
    http_hostports: tuple[str, ...] = ()
    redirect_hosts: tuple[str, ...] = ()
    # host suffix -> Authorization header value; sent to that host (and subdomains) only.
    auth_headers: Mapping[str, str] = field(default_factory=dict)

    def check(self, url: str, *, redirect: bool = False) -> None:
        """Raise ValueError unless the URL may be fetched (`redirect`: it is a redirect hop)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.username or parts.password:
            raise ValueError("URLs with credentials are not allowed")
        # The exact host:port list is the one way to an address (local test servers).
        if parts.scheme == "http" and parts.netloc.lower() in self.http_hostports:
            return
        if is_ip_literal(host) or is_internal_name(host):
            raise ValueError(f"internal or IP-literal host not allowed: {parts.netloc}")
        allowed = self.https_hosts + (self.redirect_hosts if redirect else ())
        if parts.scheme == "https" and any(host_matches(host, h) for h in allowed):
            return
        raise ValueError(f"host not allowed: {parts.scheme}://{parts.netloc}")

    def headers_for(self, url: str) -> dict[str, str]:
        """The Authorization header for this URL's host, if a token belongs to it."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            return {}
        host = parts.hostname or ""
        for suffix, value in self.auth_headers.items():
            if host_matches(host, suffix):
                return {"Authorization": value}
        return {}
