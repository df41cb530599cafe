"""Environment layers on this VM's disk: downloaded once from the models bucket, unpacked
safely, kept least-recently-used within a byte budget.

A layer is `{env_layers_dir}/cache/{environment_id}/` holding `custom_nodes/` and the
layer venv's `venv/lib/pythonX.Y/site-packages/` as the build made them (`env_build.py`), plus
`.comfyburst-layer.json` (its size, its node types from `catalogue.json`; its mtime is the
layer's last use). `builds/` beside `cache/` is the build jobs' (written as the build user);
a cached layer is written only here, by the worker, and ComfyUI only reads it.

Unpacking takes only `custom_nodes/` and `venv/lib/`, as regular files and folders: an absolute
or `..` name, a device or a fifo anywhere, or a link in what is taken, refuses the archive
(the venv's own interpreter links in `venv/bin` and `lib64` are left out: ComfyUI runs the
base interpreter with the layer's site-packages on its path). tarfile's `data` filter checks
the same again. The layer appears by one rename, so a crash never leaves half a layer.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import tarfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from comfyburst.ports import BlobStore
from comfyburst_worker.errors import WorkerError

log = logging.getLogger(__name__)

META = ".comfyburst-layer.json"
_ENV_ID = re.compile(r"^env-[0-9a-f]{64}$")
_TAKEN = ("custom_nodes", "venv/lib")
_SKIPPED_LINKS = ("venv/bin", "venv/lib64")
_TEMP_PREFIXES = (".partial-", ".unpack-", ".trash-")


def archive_name(environment_id: str) -> str:
    """The layer's archive in the models bucket (a build job stores it, env_job.py)."""
    return f"environments/{environment_id}/layer.tar.gz"


def catalogue_name(environment_id: str) -> str:
    """The layer's node types per pack, beside its archive."""
    return f"environments/{environment_id}/catalogue.json"


class EnvironmentNotReady(WorkerError):
    """A job's environment could not be made ready on this VM."""

    error_type = "environment"


class LayerMissing(EnvironmentNotReady):
    """The environment's archive (or its catalogue) is not in the models bucket."""

    error_type = "environment_missing"


class LayerCorrupt(EnvironmentNotReady):
    """The archive is not a readable gzip tar of a layer."""

    error_type = "environment_corrupt"


class LayerUnsafe(EnvironmentNotReady):
    """The archive holds a member that could land outside the layer or is not a plain file."""

    error_type = "environment_unsafe"


@dataclass(frozen=True)
class Layer:
    """A layer on disk: its folder and what ComfyUI reads from it."""

    environment_id: str
    root: Path
    node_types: tuple[str, ...]
    size_bytes: int
    downloaded: bool = False
    private: bool = False

    @property
    def custom_nodes(self) -> Path:
        return self.root / "custom_nodes"

    @property
    def site_packages(self) -> Path | None:
        return next(iter(sorted((self.root / "venv").glob("lib/python*/site-packages"))), None)


class LayerCache:
    """The layers under `root`, fetched from `bucket` with `blobs`."""

    def __init__(
        self,
        root: Path,
        blobs: BlobStore,
        bucket: str | None,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root, self.blobs, self.bucket = root, blobs, bucket
        self.max_bytes, self.clock = max_bytes, clock

    def ensure(
        self, environment_id: str, keep: Iterable[str | None] = (), private: bool = False
    ) -> Layer:
        """The layer, downloaded and unpacked if absent (marked `private`: only its owner's
        ComfyUI may see it); then layers past the budget are evicted, least recently used
        first, never this one nor those in `keep`."""
        folder = self._folder(environment_id)
        layer = self.get(environment_id)
        if layer is None:
            self._fetch(environment_id, folder, private)
            layer = self.get(environment_id)
            assert layer is not None
            layer = replace(layer, downloaded=True)
        else:
            self._touch(folder)
        self.evict({environment_id, *(k for k in keep if k)})
        return layer

    def get(self, environment_id: str) -> Layer | None:
        """The layer if it is on disk (no download)."""
        folder = self._folder(environment_id)
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, ValueError):
            return None
        return Layer(
            environment_id,
            folder,
            tuple(str(t) for t in meta.get("node_types", [])),
            int(meta.get("size_bytes", 0)),
            private=bool(meta.get("private", True)),  # unreadable: assume the worst
        )

    def present(self) -> list[str]:
        """The ids of the layers on disk, most recently used first."""
        return [env_id for env_id, _ in sorted(self._used(), key=lambda u: -u[1])]

    def private(self) -> list[str]:
        """The ids of the private layers on disk."""
        return [e for e in self.present() if (self.get(e) or _EMPTY).private]

    def remove(self, environment_id: str) -> bool:
        """Delete a layer (renamed away first, so a half-deleted one never looks present)."""
        folder = self._folder(environment_id)
        if not folder.exists():
            return False
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
        log.info("environment layer %s removed", environment_id)
        return True

    def evict(self, keep: set[str]) -> list[str]:
        """Remove least recently used layers until the rest fit `max_bytes`; never `keep`."""
        used = sorted(self._used(), key=lambda u: u[1])
        sizes = {env_id: (self.get(env_id) or _EMPTY).size_bytes for env_id, _ in used}
        total = sum(sizes.values())
        evicted: list[str] = []
        for env_id, _ in used:
            if total <= self.max_bytes:
                break
            if env_id in keep:
                continue
            if self.remove(env_id):
                total -= sizes[env_id]
                evicted.append(env_id)
        return evicted

    def clear_partials(self) -> int:
        """Remove what an interrupted download, unpack or removal left (agent start)."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for entry in self.root.iterdir():
            if entry.name.startswith(_TEMP_PREFIXES):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def _folder(self, environment_id: str) -> Path:
        if not _ENV_ID.match(environment_id):
            raise LayerMissing(f"{environment_id!r} is not an environment id")
        return self.root / environment_id

    def _used(self) -> list[tuple[str, float]]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            if _ENV_ID.match(entry.name):
                try:
                    found.append((entry.name, (entry / META).stat().st_mtime))
                except OSError:
                    continue  # not a complete layer: never made by this cache
        return found

    def _touch(self, folder: Path) -> None:
        now = self.clock()
        os.utime(folder / META, (now, now))

    def _fetch(self, environment_id: str, folder: Path, private: bool) -> None:
        if self.bucket is None:
            raise LayerMissing("this VM has no models bucket to fetch environments from")
        catalogue = self.blobs.read(self.bucket, catalogue_name(environment_id))
        if catalogue is None:
            raise LayerMissing(f"environment {environment_id} has no stored catalogue")
        node_types = _node_types(catalogue)
        self.root.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex
        archive = self.root / f".partial-{environment_id}-{tag}.tar.gz"
        unpacked = self.root / f".unpack-{environment_id}-{tag}"
        try:
            name = archive_name(environment_id)
            if not self.blobs.download_file(self.bucket, name, str(archive)):
                raise LayerMissing(f"environment {environment_id} has no stored layer archive")
            unpacked.mkdir()
            unpack(archive, unpacked)
            if not any((unpacked / "venv").glob("lib/python*/site-packages")):
                # ComfyUI's start takes a layer only with both folders (comfyui_start.py).
                raise LayerCorrupt("the layer archive holds no venv site-packages folder")
            size = _tree_bytes(unpacked)
            meta = {
                "environment_id": environment_id,
                "node_types": node_types,
                "size_bytes": size,
                "private": private,
            }
            (unpacked / META).write_text(json.dumps(meta, sort_keys=True))
            self._touch(unpacked)
            os.rename(unpacked, folder)
        finally:
            archive.unlink(missing_ok=True)
            shutil.rmtree(unpacked, ignore_errors=True)
        log.info("environment layer %s unpacked (%d bytes)", environment_id, size)


_EMPTY = Layer("", Path(), (), 0)


def unpack(archive: Path, target: Path) -> None:
    """Unpack a layer archive into the empty folder `target` (see the module's rules)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if _taken(m)]
            if not any(PurePosixPath(m.name).parts[:1] == ("custom_nodes",) for m in members):
                raise LayerCorrupt("the layer archive holds no custom_nodes folder")
            tar.extractall(target, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise LayerUnsafe(f"the layer archive holds an unsafe member: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise LayerCorrupt(f"the layer archive cannot be read ({type(exc).__name__})") from None


def unsafe_name(name: str) -> bool:
    """An archive member's name no unpack may take: absolute, with `..`, or empty."""
    parts = PurePosixPath(name).parts
    return name.startswith("/") or ".." in parts or not parts


def _taken(member: tarfile.TarInfo) -> bool:
    """Whether to extract a member; LayerUnsafe if the archive must be refused for it."""
    name = member.name
    parts = PurePosixPath(name).parts
    if unsafe_name(name):
        raise LayerUnsafe(f"the layer archive holds an unsafe name: {name!r}")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise LayerUnsafe(f"the layer archive holds a device or fifo: {name!r}")
    path = "/".join(parts)
    taken = any(path == p or path.startswith(p + "/") for p in _TAKEN)
    if member.issym() or member.islnk():
        if taken or not any(path == p or path.startswith(p + "/") for p in _SKIPPED_LINKS):
            raise LayerUnsafe(f"the layer archive holds a link: {name!r}")
        return False
    return taken


def _node_types(catalogue: bytes) -> list[str]:
    try:
        packs = json.loads(catalogue)["packs"]
        return sorted({str(t) for types in packs.values() for t in types})
    except (ValueError, KeyError, TypeError, AttributeError):
        raise LayerCorrupt("the environment's catalogue.json cannot be read") from None


def _tree_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
