"""The one rule for outbound URLs (model downloads, every redirect hop; webhooks): pure checks.

A URL may be fetched when:
- it is ASCII without spaces or control characters, `https://`, with no user info and no port
  but 443, and its host is a name (no IP literal, no numeric form such as `2130706433`,
  `0x7f.1` or `127.1`), not private by definition (`localhost`, single-label names,
  `*.localhost`, `*.local`, `*.localdomain`, `*.internal`, `*.home.arpa`), and on the
  allowlist: the listed host itself or a subdomain (`cdn.civitai.com` matches `civitai.com`,
  `evilcivitai.com` does not). A redirect hop may also go to `redirect_hosts` (the CDNs).
- or it names, exactly, one of the deployment's `test_hostports` (`host:port`, http or https;
  the local cloud's model server; empty in a real deployment). Those may be IP literals, and
  their addresses must be loopback: the setting opens loopback ports, nothing else.

And every address its host resolves to is public (`check_address`): loopback, private,
link-local (the metadata server 169.254.169.254 included), CGNAT 100.64/10, unique-local IPv6
(fd00:ec2::254 included), multicast, unspecified and reserved addresses are refused, also as
IPv4-mapped/compatible IPv6. The connection then goes to the address that was checked
(`comfyburst.adapters.pinned_http`), never to a second lookup's answer.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

PRIVATE_NAMES = ("localhost", "metadata", "metadata.google.internal")
PRIVATE_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa")
# Dotted/numeric forms resolvers take for IPv4 (inet_aton): 127.1, 0x7f.0.0.1, 2130706433.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)
_REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT, shared address space
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, the metadata server
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",  # unique-local, fd00:ec2::254 included
        "fe80::/10",
        "ff00::/8",
    )
)


class UrlRefused(ValueError):
    """The URL (or an address its host resolves to) may not be fetched; says why."""


@dataclass(frozen=True)
class Target:
    """Where a checked URL connects: scheme, host, port; `test`: a test host:port entry."""

    scheme: str
    host: str
    port: int
    test: bool = False


@dataclass(frozen=True)
class UrlRule:
    """Allowlists of one deployment (lower-case; see the module docstring)."""

    https_hosts: tuple[str, ...] = ()
    redirect_hosts: tuple[str, ...] = ()
    test_hostports: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        https_hosts: tuple[str, ...] | list[str],
        redirect_hosts: tuple[str, ...] | list[str] = (),
        test_hostports: tuple[str, ...] | list[str] = (),
    ) -> UrlRule:
        def norm(items: tuple[str, ...] | list[str]) -> tuple[str, ...]:
            return tuple(h.strip().lower().rstrip(".") for h in items if h.strip())

        return cls(norm(https_hosts), norm(redirect_hosts), norm(test_hostports))


def host_matches(host: str, allowed: str) -> bool:
    """`host` is `allowed` or one of its subdomains."""
    host, allowed = host.lower().rstrip("."), allowed.lower().rstrip(".")
    return host == allowed or host.endswith("." + allowed)


def is_ip_literal(host: str) -> bool:
    """An IPv4/IPv6 address, including the short and numeric forms resolvers accept."""
    host = host.strip("[]").rstrip(".")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_NUMERIC_HOST.match(host))
    return True


def is_private_name(host: str) -> bool:
    """A name for this machine or a private network by definition (single labels included)."""
    host = host.lower().rstrip(".")
    return host in PRIVATE_NAMES or host.endswith(PRIVATE_SUFFIXES) or "." not in host


def check_url(url: str, rule: UrlRule, *, redirect: bool = False) -> Target:
    """The target of `url` if the rule lets it be fetched; UrlRefused (with why) otherwise."""
    if not url.isascii() or any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        raise UrlRefused("must be ASCII without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if "@" in parts.netloc:
        raise UrlRefused("must not contain user info")
    if scheme not in ("http", "https"):
        raise UrlRefused("must use https://")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("has no host")
    if parts.netloc.lower() in rule.test_hostports:
        default = 443 if scheme == "https" else 80
        return Target(scheme, host, port or default, test=True)
    if scheme != "https":
        raise UrlRefused("must use https:// (plain http is not allowed)")
    if port not in (None, 443):
        raise UrlRefused("must not name a port other than 443")
    if is_ip_literal(host):
        raise UrlRefused("must name a host, not an IP address")
    if is_private_name(host):
        raise UrlRefused(f"names a private host: {host}")
    allowed = rule.https_hosts + (rule.redirect_hosts if redirect else ())
    if not any(host_matches(host, a) for a in allowed):
        listed = ", ".join(allowed) or "none"
        raise UrlRefused(f"host {host} is not allowed (allowed: {listed} and subdomains)")
    return Target("https", host.lower(), 443)


def check_address(address: str, target: Target) -> None:
    """Refuse an address `target`'s host resolved to unless it is public (loopback only, and
    required, for a test host:port entry)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        raise UrlRefused(f"{target.host} resolved to a non-address: {address!r}") from None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    if target.test:
        if not ip.is_loopback:
            raise UrlRefused(f"test host {target.host} resolved to {ip}, not a loopback address")
        return
    if any(ip in net for net in _REFUSED_NETWORKS if net.version == ip.version):
        raise UrlRefused(f"{target.host} resolves to a non-public address ({ip})")
    if not ip.is_global:
        raise UrlRefused(f"{target.host} resolves to a non-public address ({ip})")


# IPv6 forms that carry an IPv4 address a translator or tunnel delivers to: NAT64's
# well-known and local-use prefixes (RFC 6052, RFC 8215) and SIIT's IPv4-translated form.
_IPV4_TRANSLATED = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through (mapped, compatible, 6to4, Teredo's
    client, NAT64, SIIT), judged instead of the wrapper; None for a plain IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (deprecated, still routed by some)
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _IPV4_TRANSLATED):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None
