"""A registry pack (`ID@VERSION`) fetched from the deployment's Comfy registry, checked, then
unpacked as the build's user.

The registry's API answers `GET {base}/nodes/{id}/versions/{version}` with the version's
`NodeVersion` (`downloadUrl`, `status`, `version`; 404 when it has no such version) and serves
the pack as a zip of its folder (what ComfyUI-Manager and comfy-cli unpack into
`custom_nodes/<id>`). The worker, not the build's user, talks to the registry: the API's URL is
the deployer's `custom_node_registry_url`; the download URL it answers must pass the one
outbound URL rule (`domain/urls.py`) with the deployer's `custom_node_registry_download_hosts`
(https, no port, a public name on that list; every redirect hop the same) and connects to the
address it checked (`adapters/pinned_http.py`). At most `max_archive_bytes` are read, into an
anonymous file of the worker's. Its members are checked here (the layer archive's rule,
`env_layers.unsafe_name`, and: only plain files and folders, no duplicate, at most `max_files`,
at most `max_unpacked_bytes` declared), then the build's user unpacks it from its stdin
(`UNZIP`, checking again as it writes, never over an existing file).
"""

from __future__ import annotations

import json
import stat
import zipfile
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import quote, urlsplit

import requests

from comfyburst.adapters.pinned_http import Resolver, pinned_session, system_resolver
from comfyburst.domain.urls import UrlRefused, UrlRule, check_url
from comfyburst_worker.env_build_errors import BuildFailed
from comfyburst_worker.env_layers import unsafe_name

MAX_API_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024
_REFUSED_STATUSES = ("NodeVersionStatusBanned", "NodeVersionStatusDeleted")

# Run as the build's user with the base interpreter: argv = target folder (new), archive limit,
# unpacked limit; the zip on stdin. Refuses what the worker refused, in case.
UNZIP = r"""
import io, os, stat, sys, zipfile
target, limit, unpacked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = sys.stdin.buffer.read(limit + 1)
if len(data) > limit:
    sys.exit("the archive is larger than %d bytes" % limit)
os.makedirs(target)
total = 0
with zipfile.ZipFile(io.BytesIO(data)) as zf:
    for info in zf.infolist():
        parts = [p for p in info.filename.split("/") if p]
        kind = stat.S_IFMT(info.external_attr >> 16)
        if (not parts or info.filename.startswith("/") or "\\" in info.filename
                or any(p in (".", "..") for p in parts)
                or kind not in (0, stat.S_IFREG, stat.S_IFDIR)):
            sys.exit("the archive holds an unsafe member: %r" % info.filename)
        path = os.path.join(target, *parts)
        if info.is_dir():
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with zf.open(info) as src, open(path, "xb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > unpacked:
                    sys.exit("the archive unpacks to more than %d bytes" % unpacked)
                out.write(chunk)
"""


@dataclass(frozen=True)
class RegistryPack:
    """A registry pack at a version; unpacked into `custom_nodes/<id>` as the registry's
    clients do."""

    id: str
    version: str

    @property
    def text(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def folder(self) -> str:
        return self.id


@dataclass
class RegistryFetcher:
    """The deployment's registry: its API's base URL and the hosts its archives come from."""

    base_url: str
    download_hosts: tuple[str, ...] = ()
    test_hostports: tuple[str, ...] = ()
    max_archive_bytes: int = 200 * 1024 * 1024
    max_unpacked_bytes: int = 1024 * 1024 * 1024
    max_files: int = 20_000
    timeout_s: float = 60.0
    resolver: Resolver = field(default=system_resolver)

    def version_url(self, pack: RegistryPack) -> str:
        node, version = quote(pack.id, safe=""), quote(pack.version, safe="")
        return f"{self.base_url.rstrip('/')}/nodes/{node}/versions/{version}"

    def download(self, pack: RegistryPack, out: IO[bytes]) -> None:
        """The pack's archive into `out` (then at its start), checked; BuildFailed otherwise."""
        url = self._download_url(pack)
        rule = UrlRule.of(self.download_hosts, self.download_hosts, self.test_hostports)
        try:
            check_url(url, rule)
        except UrlRefused as exc:
            raise BuildFailed(
                pack.text,
                f"the registry's download URL {exc} (custom_node_registry_download_hosts)",
            ) from None
        try:
            with pinned_session(rule, self.resolver) as session:
                session.max_redirects = 5
                headers = {"Accept-Encoding": "identity"}
                with session.get(url, stream=True, timeout=self.timeout_s, headers=headers) as resp:
                    if resp.status_code != 200:
                        raise BuildFailed(
                            pack.text, f"downloading its archive answered HTTP {resp.status_code}"
                        )
                    self._copy(pack, resp, out)
        except (requests.RequestException, UrlRefused) as exc:
            raise BuildFailed(
                pack.text, f"downloading its archive failed ({type(exc).__name__}: {exc})"
            ) from None
        out.seek(0)
        self.check_archive(pack, out)
        out.seek(0)

    def check_archive(self, pack: RegistryPack, archive: IO[bytes]) -> None:
        """Refuse an archive that is not a zip of plain files and folders within the limits."""
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise BuildFailed(pack.text, f"its archive is not a zip ({exc})") from None
        if len(infos) > self.max_files:
            raise BuildFailed(pack.text, f"its archive holds more than {self.max_files} files")
        seen: set[str] = set()
        total = 0
        for info in infos:
            name = info.filename
            kind = stat.S_IFMT(info.external_attr >> 16)
            if unsafe_name(name) or "\\" in name or kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise BuildFailed(pack.text, f"its archive holds an unsafe member: {name!r}")
            key = name.rstrip("/")
            if key in seen:
                raise BuildFailed(pack.text, f"its archive holds {name!r} twice")
            seen.add(key)
            total += info.file_size
        if total > self.max_unpacked_bytes:
            raise BuildFailed(
                pack.text, f"its archive unpacks to more than {self.max_unpacked_bytes} bytes"
            )

    def _download_url(self, pack: RegistryPack) -> str:
        url = self.version_url(pack)
        rule = UrlRule.of([urlsplit(url).hostname or ""], (), self.test_hostports)
        try:
            with pinned_session(rule, self.resolver) as session:
                resp = session.get(url, timeout=self.timeout_s, allow_redirects=False, stream=True)
                body = resp.raw.read(MAX_API_BYTES + 1, decode_content=True)
        except (requests.RequestException, UrlRefused) as exc:
            raise BuildFailed(
                pack.text, f"the registry could not be asked ({type(exc).__name__}: {exc})"
            ) from None
        if resp.status_code == 404:
            raise BuildFailed(pack.text, f"the registry has no version {pack.version} of {pack.id}")
        if resp.status_code != 200 or len(body) > MAX_API_BYTES:
            raise BuildFailed(pack.text, f"the registry answered HTTP {resp.status_code}")
        try:
            info = json.loads(body)
            status, version = info.get("status"), info.get("version")
            download_url = info["downloadUrl"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BuildFailed(pack.text, "the registry's answer has no downloadUrl") from None
        if version not in (None, pack.version):
            raise BuildFailed(pack.text, f"the registry answered version {version!r}")
        if status in _REFUSED_STATUSES:
            raise BuildFailed(pack.text, f"the registry marks this version {status}")
        if not isinstance(download_url, str) or not download_url:
            raise BuildFailed(pack.text, "the registry's answer has no downloadUrl")
        return download_url

    def _copy(self, pack: RegistryPack, resp: requests.Response, out: IO[bytes]) -> None:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_archive_bytes:
            raise BuildFailed(
                pack.text, f"its archive is larger than {self.max_archive_bytes} bytes"
            )
        written = 0
        for chunk in resp.iter_content(_CHUNK):
            written += len(chunk)
            if written > self.max_archive_bytes:
                raise BuildFailed(
                    pack.text, f"its archive is larger than {self.max_archive_bytes} bytes"
                )
            out.write(chunk)


def registry_of(config: object) -> RegistryFetcher | None:
    """The deployment's registry (DeploymentConfig's `custom_node_registry_*`), if it names one."""
    base = getattr(config, "custom_node_registry_url", None)
    if not base:
        return None
    return RegistryFetcher(
        base_url=str(base),
        download_hosts=tuple(getattr(config, "custom_node_registry_download_hosts", None) or ()),
        test_hostports=tuple(h.lower() for h in getattr(config, "http_model_hosts", None) or ()),
    )
