"""Which URLs a model may come from (the one rule, `comfyburst.domain.urls`), and which
deployment token goes to which URL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from comfyburst.domain.urls import UrlRefused, UrlRule, check_url


def public_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to store (no `?token=`)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def in_scope(url: str, prefixes: tuple[str, ...]) -> bool:
    """`url` starts with one of the `https://host/path` prefixes (scheme and host compared
    case-insensitively; a prefix ends at a path boundary, so `/api/` never matches `/apix`)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or parts.port not in (None, 443) or "@" in parts.netloc:
        return False
    host = (parts.hostname or "").rstrip(".").lower()
    path = parts.path or "/"
    for prefix in prefixes:
        scope = urlsplit(prefix)
        scope_path = scope.path or "/"
        if (scope.hostname or "").lower() != host:
            continue
        if path == scope_path or path.startswith(scope_path.rstrip("/") + "/"):
            return True
    return False


def default_scope(host: str) -> tuple[str, ...]:
    """A token's URL prefixes when the deployer set none: its own host, every path (no
    subdomain, no other host)."""
    return (f"https://{host.lower().rstrip('.')}/",)


@dataclass(frozen=True)
class HostPolicy:
    """The deployment's URL rule plus its tokens, each sent only inside its URL scope.

    A redirect hop may also go to `redirect_hosts` (the CDNs behind Hugging Face and
    Civitai); the submitted URL may not. A token goes only to a URL inside its scope
    (`token_scopes[host]`, else `default_scope(host)`), and on a redirect only while the hop
    stays on the submitted URL's host.
    """

    https_hosts: tuple[str, ...] = ()
    http_hostports: tuple[str, ...] = ()
    redirect_hosts: tuple[str, ...] = ()
    # token host -> Authorization header value
    auth_headers: Mapping[str, str] = field(default_factory=dict)
    # token host -> the URL prefixes its token is sent to
    token_scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def rule(self) -> UrlRule:
        return UrlRule.of(self.https_hosts, self.redirect_hosts, self.http_hostports)

    def check(self, url: str, *, redirect: bool = False) -> None:
        """Raise ValueError unless the URL may be fetched (`redirect`: it is a redirect hop)."""
        try:
            check_url(url, self.rule, redirect=redirect)
        except UrlRefused as exc:
            raise ValueError(f"not allowed: {urlsplit(url).netloc or url[:40]}: {exc}") from None

    def headers_for(self, url: str, submitted: str | None = None) -> dict[str, str]:
        """The Authorization header for `url` if a token is scoped to it; `submitted`: the URL
        the job gave, when `url` is a redirect hop (other hosts never get a token)."""
        if submitted is not None and _host(submitted) != _host(url):
            return {}
        for host, value in self.auth_headers.items():
            if in_scope(url, tuple(self.token_scopes.get(host) or default_scope(host))):
                return {"Authorization": value}
        return {}


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").rstrip(".").lower()
