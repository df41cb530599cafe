"""Local custom-node packs as the GPU image lists them: a folder under ComfyUI's
`custom_nodes/`, its git remote and commit, and the `gpu_image/custom_nodes.txt` line.

A folder without `.git` that ComfyUI-Manager installed from the Comfy registry (it leaves a
`.tracking` file beside the pack's `pyproject.toml`, whose `[project]` `name` and `version` are
the registry's id, lower-cased as the Manager does, and version) is the registry pack
`ID@VERSION`.

One rule for what a pack line may hold, used by the node (to name a pack the GPU lacks) and by
`comfyburst image nodes` (to write the list); the image build checks the same shape.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}$")
# `git@host:owner/repo.git`, the scp-like form git prints for SSH remotes.
_SCP_REMOTE = re.compile(
    r"^(?:[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+\.[A-Za-z]+):(?P<path>[^\s/][^\s]*)$"
)
GIT_TIMEOUT_S = 10.0


class PackError(ValueError):
    """A local pack that cannot be listed for the GPU image; the message says why."""


class PackDirty(PackError):
    """A pack whose checkout has changes its commit does not hold (the GPU would not get them)."""


@dataclass(frozen=True)
class Pack:
    """One custom-node pack: its folder name, where its code comes from and which commit."""

    name: str
    folder: Path
    remote: str | None
    commit: str | None
    dirty: bool = False
    # A registry install's id and version (no git): see the module docstring.
    registry: tuple[str, str] | None = None

    def describe(self) -> str:
        """`NAME (REMOTE @ COMMIT)` for messages; says what is unknown."""
        if self.remote is None and self.registry is not None:
            return f"{self.name} (registry {self.registry[0]} @ {self.registry[1]})"
        where = self.remote or "no git remote"
        at = self.commit[:12] if self.commit else "no commit"
        changed = ", local changes" if self.dirty else ""
        return f"{self.name} ({where} @ {at}{changed})"

    def line(self) -> str:
        """The pack's `custom_nodes.txt` line: NAME HTTPS_URL COMMIT."""
        if not NAME_PATTERN.match(self.name):
            raise PackError(f"{self.folder}: the folder name {self.name!r} is not a pack name")
        if self.remote is None:
            raise PackError(f"{self.folder}: no git remote (origin) to install it from")
        if self.commit is None or not COMMIT_PATTERN.match(self.commit):
            raise PackError(f"{self.folder}: no git commit checked out")
        return f"{self.name} {https_remote(self.remote)} {self.commit}"


def public_remote(url: str) -> str:
    """The remote without credentials, query or fragment (safe to show and to write down)."""
    if _SCP_REMOTE.match(url):
        return url  # an SSH login name (git@…) is no secret
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def https_remote(url: str) -> str:
    """The https URL the image clones from; SSH remotes become their https form."""
    scp = _SCP_REMOTE.match(url)
    if scp:
        url = f"https://{scp['host']}/{scp['path']}"
    elif url.startswith("ssh://"):
        parts = urlsplit(url)
        url = f"https://{parts.hostname}{parts.path}"
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise PackError(f"remote {public_remote(url)!r}: the image clones over https only")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise PackError(f"remote {public_remote(url)!r}: credentials or query in the URL")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        pass
    else:
        raise PackError(f"remote {url!r}: an IP address, not a host name")
    if "." not in parts.hostname:
        raise PackError(f"remote {url!r}: {parts.hostname!r} is not a public host name")
    return urlunsplit(("https", parts.hostname, parts.path, "", ""))


def pack_source(pack: Pack, *, allow_dirty: bool = False) -> str:
    """A local pack's `URL@COMMIT` as an environment names it (the CLI's and the node's one
    rule): its remote in the https form the image clones (SSH remotes converted), or as it is
    where there is none (the API's URL rule has the last word and names what is wrong).
    PackError when it is not a git checkout with a remote and a commit; PackDirty when it has
    local changes, unless `allow_dirty` (the caller warns instead). A registry install without
    git is its `ID@VERSION`."""
    if pack.remote is None and pack.registry is not None:
        return f"{pack.registry[0]}@{pack.registry[1]}"
    if pack.remote is None:
        raise PackError(f"{pack.name}: not a git checkout with a remote (origin)")
    if pack.commit is None:
        raise PackError(f"{pack.name}: no git commit checked out")
    if pack.dirty and not allow_dirty:
        raise PackDirty(
            f"{pack.describe()}: changes not in commit {pack.commit[:12]} would not be on the GPU"
        )
    try:
        remote = https_remote(pack.remote)
    except PackError:
        remote = pack.remote
    return f"{remote.rstrip('/')}@{pack.commit}"


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def read_pack(folder: Path) -> Pack:
    """What git says about a pack folder (remote and commit None where it says nothing)."""
    is_repo = (folder / ".git").exists()
    remote = _git(folder, "config", "--get", "remote.origin.url") if is_repo else None
    commit = _git(folder, "rev-parse", "HEAD") if is_repo else None
    status = _git(folder, "status", "--porcelain", "--untracked-files=no") if is_repo else None
    return Pack(
        name=folder.name,
        folder=folder,
        remote=public_remote(remote) if remote else None,
        commit=commit if commit and COMMIT_PATTERN.match(commit) else None,
        dirty=bool(status),
        registry=None if is_repo else registry_install(folder),
    )


def registry_install(folder: Path) -> tuple[str, str] | None:
    """(id, version) of a pack ComfyUI-Manager installed from the registry, else None."""
    if not (folder / ".tracking").is_file():
        return None
    try:
        text = (folder / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    name, version = _project_name_version(text)
    if not name or not version:
        return None
    return name.strip().lower(), version.strip()


def _project_name_version(text: str) -> tuple[str | None, str | None]:
    """`[project]` `name` and `version` of a pyproject.toml (tomllib where Python has it)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10 (ComfyUI's floor): the two plain string keys
        return _plain_project_keys(text)
    try:
        project = tomllib.loads(text).get("project") or {}
    except tomllib.TOMLDecodeError:
        return None, None
    name, version = project.get("name"), project.get("version")
    return (
        name if isinstance(name, str) else None,
        version if isinstance(version, str) else None,
    )


def _plain_project_keys(text: str) -> tuple[str | None, str | None]:
    found: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[] ")
            continue
        key, eq, value = line.partition("=")
        if section == "project" and eq and key.strip() in ("name", "version"):
            found.setdefault(key.strip(), value.strip().strip("\"'"))
    return found.get("name"), found.get("version")


def local_packs(custom_nodes: Path) -> list[Pack]:
    """The enabled packs of a ComfyUI's `custom_nodes/` folder, by name."""
    if not custom_nodes.is_dir():
        raise PackError(f"{custom_nodes} is not a folder (expected ComfyUI's custom_nodes/)")
    return [
        read_pack(entry)
        for entry in sorted(custom_nodes.iterdir(), key=lambda p: p.name.lower())
        if entry.is_dir()
        and not entry.name.startswith((".", "__"))
        and not entry.name.endswith(".disabled")
    ]
