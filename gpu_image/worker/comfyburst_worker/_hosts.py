"""Which URLs a model may come from, and which credential goes to which host."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def host_matches(host: str, allowed: str) -> bool:
    """`host` is `allowed` or one of its subdomains (cdn-lfs.huggingface.co for huggingface.co)."""
    host, allowed = host.lower().rstrip("."), allowed.lower().rstrip(".")
    return host == allowed or host.endswith("." + allowed)


@dataclass(frozen=True)
class HostPolicy:
    """https to allow-listed hosts; plain http only to exact `host:port` (local tests)."""

    https_hosts: tuple[str, ...] = ()
    http_hostports: tuple[str, ...] = ()
    # host suffix -> Authorization header value; sent to that host (and subdomains) only.
    auth_headers: Mapping[str, str] = field(default_factory=dict)

    def check(self, url: str) -> None:
        """Raise ValueError unless the URL may be fetched."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.username or parts.password:
            raise ValueError("URLs with credentials are not allowed")
        if parts.scheme == "https" and any(host_matches(host, h) for h in self.https_hosts):
            return
        if parts.scheme == "http" and parts.netloc.lower() in self.http_hostports:
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
