"""Which custom-node packs a deployment builds, and which it trusts: pure, no I/O.

A pack is pinned: `https://HOST/OWNER/REPO@COMMIT` (a git repository over https, checked with
the one outbound URL rule, `domain/urls.py`, at a 40-hex commit) or `ID@VERSION` (a pack of the
Comfy registry at a released version; `registry:ID@VERSION` is read as the same). Its canonical
text is what an environment's id hashes.

The deployer's lists (`custom_node_sources`, `trusted_custom_node_sources`) hold entries:
`HOST` (every repository on that host; the host itself, not its subdomains), `HOST/OWNER`,
`HOST/OWNER/REPO` (path segments compared exactly, case included: the safe side on hosts that
tell `Owner` from `owner`), `registry:ID` (one registry pack) or `registry:*` (all of them).
An empty list allows nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from comfyburst.domain.urls import UrlRefused, UrlRule, check_url

COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_REGISTRY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VERSION = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}([-+][0-9A-Za-z.-]{1,64})?$")
MAX_PACK_CHARS = 600
MAX_PATH_SEGMENTS = 8
REGISTRY_PREFIX = "registry:"
PACK_FORMS = "`https://HOST/OWNER/REPO@COMMIT` (40 hex digits) or `REGISTRY_ID@VERSION`"
_REGISTRY_HINT = "; a registry pack is `ID@VERSION` (or `registry:ID@VERSION`)"


class PackInvalid(ValueError):
    """The text is not a pinned pack (or a source entry); says why."""


@dataclass(frozen=True)
class Pack:
    """One pinned pack; `source` is the canonical URL (git) or registry id."""

    kind: str  # "git" or "registry"
    source: str
    ref: str  # the commit (git) or the version (registry)

    @property
    def text(self) -> str:
        """The canonical text: what requests accept and the environment id hashes."""
        return f"{self.source}@{self.ref}"

    @property
    def host(self) -> str:
        """The host (with its port for a test `host:port`, the only sources that have one)."""
        if self.kind != "git":
            return ""
        return urlsplit(self.source).netloc.lower()

    @property
    def path(self) -> tuple[str, ...]:
        if self.kind != "git":
            return ()
        return tuple(urlsplit(self.source).path.strip("/").split("/"))


def parse_pack(text: str, *, test_hostports: tuple[str, ...] = ()) -> Pack:
    """The pack `text` names, canonical; PackInvalid (with why) otherwise. `test_hostports`:
    the URL rule's loopback `host:port` allowance (the local cloud's; empty when deployed)."""
    if not isinstance(text, str) or not text or len(text) > MAX_PACK_CHARS:
        raise PackInvalid(f"a pack is {PACK_FORMS}, at most {MAX_PACK_CHARS} characters")
    source, at, ref = text.strip().rpartition("@")
    if not at or not source:
        raise PackInvalid(f"a pack is pinned: {PACK_FORMS}")
    if "://" in source:
        return Pack("git", _git_source(source, test_hostports), _commit(ref))
    # `registry:` (the source entries' prefix) may name a registry pack too; the canonical
    # text is without it.
    source = source.removeprefix(REGISTRY_PREFIX)
    if not _REGISTRY_ID.match(source):
        raise PackInvalid(f"a pack is {PACK_FORMS}: {source!r} is not a registry id")
    if not _VERSION.match(ref):
        raise PackInvalid(
            f"a pack is {PACK_FORMS}: {ref!r} is not a released version (N.N.N){_REGISTRY_HINT}"
        )
    return Pack("registry", source, ref)


def _commit(ref: str) -> str:
    if not COMMIT_PATTERN.match(ref.lower()):
        raise PackInvalid("a git pack is pinned to a full commit: 40 hex digits")
    return ref.lower()


def _git_source(url: str, test_hostports: tuple[str, ...] = ()) -> str:
    """The canonical `https://host/seg/seg` of a repository URL that passes the URL rule
    (`scheme://host:port/seg/seg` for one of the rule's test host:ports)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    try:
        # The one outbound URL rule, with this host allowed: https, no user info, no port but
        # 443, a name (not an address), not a private name. Which hosts may be built is the
        # sources' decision, made separately so its refusal has its own code.
        target = check_url(url, UrlRule.of([host] if host else [], (), test_hostports))
    except UrlRefused as exc:
        raise PackInvalid(f"the repository URL {exc}") from None
    parts = urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise PackInvalid("the repository URL must not have a query or fragment")
    path = parts.path.rstrip("/")
    path = path.removesuffix(".git")
    segments = path.strip("/").split("/")
    if not 2 <= len(segments) <= MAX_PATH_SEGMENTS or not all(
        _SEGMENT.match(s) and s not in (".", "..") for s in segments
    ):
        raise PackInvalid("the repository URL must be https://HOST/OWNER/REPO")
    if target.test:
        return f"{target.scheme}://{parts.netloc.lower()}/{'/'.join(segments)}"
    return f"https://{target.host.rstrip('.')}/{'/'.join(segments)}"


@dataclass(frozen=True)
class SourcePolicy:
    """Parsed source entries (see the module docstring)."""

    git: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (host, path prefix)
    registry: tuple[str, ...] = ()
    registry_all: bool = False

    @classmethod
    def of(cls, entries: Iterable[str], test_hostports: tuple[str, ...] = ()) -> SourcePolicy:
        """The policy of these entries; PackInvalid names a malformed one. An entry may name
        one of the URL rule's test `host:port`s (the local cloud's loopback git server)."""
        git: list[tuple[str, tuple[str, ...]]] = []
        registry: list[str] = []
        registry_all = False
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry.startswith(REGISTRY_PREFIX):
                name = entry.removeprefix(REGISTRY_PREFIX)
                if name == "*":
                    registry_all = True
                elif _REGISTRY_ID.match(name):
                    registry.append(name)
                else:
                    raise PackInvalid(f"source entry {entry!r}: not registry:ID or registry:*")
                continue
            git.append(_git_entry(entry, test_hostports))
        return cls(tuple(git), tuple(registry), registry_all)

    @property
    def empty(self) -> bool:
        return not (self.git or self.registry or self.registry_all)

    def allows(self, pack: Pack) -> bool:
        """Whether an entry covers the pack."""
        if pack.kind == "registry":
            return self.registry_all or pack.source in self.registry
        host, path = pack.host, pack.path
        return any(h == host and path[: len(p)] == p for h, p in self.git)


def _git_entry(entry: str, test_hostports: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    host, _, rest = entry.partition("/")
    host = host.lower().rstrip(".")
    try:
        check_url(f"https://{host}/", UrlRule.of([host], (), test_hostports))
    except UrlRefused as exc:
        raise PackInvalid(f"source entry {entry!r}: {exc}") from None
    path = tuple(s for s in rest.strip("/").split("/") if s) if rest else ()
    if len(path) > MAX_PATH_SEGMENTS or not all(
        _SEGMENT.match(s) and s not in (".", "..") for s in path
    ):
        raise PackInvalid(f"source entry {entry!r}: not HOST, HOST/OWNER or HOST/OWNER/REPO")
    return host, path
