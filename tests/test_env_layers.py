"""Environment layers on a VM's disk (comfyburst_worker/env_layers.py): fetched once from the
models bucket, unpacked only as plain files under the layer, kept LRU within a byte budget."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from comfyburst_worker.env_layers import (
    LayerCache,
    LayerCorrupt,
    LayerMissing,
    LayerUnsafe,
    archive_name,
    catalogue_name,
)
from tests.fakes import InMemoryBlobStore

BUCKET = "models"
NODE = "CbLayerNode"


def env_id(n: int) -> str:
    return "env-" + f"{n:x}".rjust(64, "0")


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def layer_archive(
    extra: list[tarfile.TarInfo] | None = None, pad: int = 0, init_text: str | None = None
) -> bytes:
    """A layer archive as the build writes it: custom_nodes, a venv with its links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        init = (init_text or f"NODE_CLASS_MAPPINGS = {{'{NODE}': object}}\n").encode()
        tar.addfile(*_file("custom_nodes/pack/__init__.py", init))
        tar.addfile(*_file("custom_nodes/pack/blob.bin", b"x" * pad))
        site = "venv/lib/python3.11/site-packages"
        tar.addfile(*_file(f"{site}/cbenvdep/__init__.py", b"FACTOR = 2\n"))
        tar.addfile(*_file("venv/pyvenv.cfg", b"home = /usr/bin\n"))
        for name, target in (("venv/bin/python", "/usr/bin/python3"), ("venv/lib64", "lib")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
        for member in extra or []:
            tar.addfile(member, io.BytesIO(b"") if member.isfile() else None)
    return buf.getvalue()


def store(
    blobs: InMemoryBlobStore, eid: str, archive: bytes | None = None, types: tuple[str, ...] = ()
) -> None:
    blobs.write(BUCKET, archive_name(eid), archive if archive is not None else layer_archive())
    pack = "http://h/o/pack@" + "a" * 40
    catalogue = {"environment_id": eid, "packs": {pack: list(types or (NODE,))}}
    blobs.write(BUCKET, catalogue_name(eid), json.dumps(catalogue).encode())


class Counting(InMemoryBlobStore):
    def __init__(self) -> None:
        super().__init__()
        self.downloads = 0

    def download_file(self, bucket: str, name: str, path: str) -> bool:
        self.downloads += 1
        return super().download_file(bucket, name, path)


class Ticks:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 10
        return self.now


def cache(tmp_path: Path, blobs: InMemoryBlobStore, max_bytes: int = 10**9) -> LayerCache:
    return LayerCache(tmp_path / "cache", blobs, BUCKET, max_bytes, clock=Ticks())


def test_a_layer_is_downloaded_once_and_unpacked_without_the_venvs_links(tmp_path: Path) -> None:
    blobs = Counting()
    store(blobs, env_id(1))
    layers = cache(tmp_path, blobs)
    first = layers.ensure(env_id(1))
    assert first.downloaded and blobs.downloads == 1
    assert (first.custom_nodes / "pack" / "__init__.py").is_file()
    assert first.site_packages == first.root / "venv/lib/python3.11/site-packages"
    assert (first.site_packages / "cbenvdep" / "__init__.py").read_text() == "FACTOR = 2\n"
    assert first.node_types == (NODE,)
    assert not (first.root / "venv" / "bin").exists()
    assert not (first.root / "venv" / "lib64").exists()
    again = layers.ensure(env_id(1))
    assert not again.downloaded and blobs.downloads == 1
    assert layers.present() == [env_id(1)]
    # Nothing left beside the layer (the archive, the temporary folder).
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [env_id(1)]


def test_least_recently_used_layers_go_over_the_budget_never_those_kept(tmp_path: Path) -> None:
    blobs = InMemoryBlobStore()
    for n in (1, 2, 3):
        store(blobs, env_id(n), layer_archive(pad=1000))
    layers = cache(tmp_path, blobs)
    one_layer = layers.ensure(env_id(1)).size_bytes
    layers.max_bytes = 2 * one_layer + 10  # room for two
    layers.ensure(env_id(2))
    layers.ensure(env_id(1))  # used again: 2 is now the least recent
    layers.ensure(env_id(3))
    assert set(layers.present()) == {env_id(1), env_id(3)}
    # The active layer (kept) survives even as the least recently used.
    layers.ensure(env_id(2), keep=[env_id(1)])
    assert set(layers.present()) == {env_id(1), env_id(2)}
    # A budget smaller than one layer still keeps the one asked for.
    layers.max_bytes = 1
    layers.ensure(env_id(2))
    assert layers.present() == [env_id(2)]


def test_remove_and_leftovers_of_an_interrupted_unpack(tmp_path: Path) -> None:
    blobs = InMemoryBlobStore()
    store(blobs, env_id(1))
    layers = cache(tmp_path, blobs)
    layers.ensure(env_id(1), private=True)
    assert layers.private() == [env_id(1)]
    (tmp_path / "cache" / f".unpack-{env_id(2)}-x").mkdir()
    (tmp_path / "cache" / f".partial-{env_id(2)}-x.tar.gz").write_bytes(b"half")
    # Without its marker file a folder is no layer (a crash mid-rename cannot make one).
    (tmp_path / "cache" / env_id(3)).mkdir()
    assert layers.present() == [env_id(1)]
    assert layers.clear_partials() == 2
    assert layers.remove(env_id(1)) and not (tmp_path / "cache" / env_id(1)).exists()
    assert layers.present() == [] and not layers.remove(env_id(1))


def test_missing_archive_catalogue_and_a_corrupt_archive_are_named(tmp_path: Path) -> None:
    blobs = InMemoryBlobStore()
    layers = cache(tmp_path, blobs)
    with pytest.raises(LayerMissing, match="no stored catalogue"):
        layers.ensure(env_id(1))
    store(blobs, env_id(1))
    blobs.delete(BUCKET, archive_name(env_id(1)))
    with pytest.raises(LayerMissing, match="no stored layer archive") as missing:
        layers.ensure(env_id(1))
    assert missing.value.job_error().type == "environment_missing"
    store(blobs, env_id(2), b"not a gzip at all")
    with pytest.raises(LayerCorrupt) as corrupt:
        layers.ensure(env_id(2))
    assert corrupt.value.job_error().type == "environment_corrupt"
    store(blobs, env_id(3), layer_archive()[:200])  # cut short
    with pytest.raises(LayerCorrupt):
        layers.ensure(env_id(3))
    with pytest.raises(LayerMissing, match="not an environment id"):
        layers.ensure("../../etc")
    assert layers.present() == []
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == []


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("/etc/cron.d/x"),
        _member("custom_nodes/../../escape.py"),
        _member("custom_nodes/pack/evil", tarfile.SYMTYPE, "/home/worker/.config"),
        _member("custom_nodes/pack/rel", tarfile.SYMTYPE, "../../../outside"),
        _member("custom_nodes/pack/hard", tarfile.LNKTYPE, "custom_nodes/pack/__init__.py"),
        _member("venv/lib/python3.11/site-packages/x.pth", tarfile.SYMTYPE, "/etc/passwd"),
        _member("custom_nodes/pack/dev", tarfile.CHRTYPE),
        _member("venv/fifo", tarfile.FIFOTYPE),
        _member("elsewhere/link", tarfile.SYMTYPE, "/"),
    ],
    ids=lambda m: m.name,
)
def test_an_unsafe_member_refuses_the_whole_archive(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    blobs = InMemoryBlobStore()
    store(blobs, env_id(1), layer_archive(extra=[member]))
    layers = cache(tmp_path, blobs)
    with pytest.raises(LayerUnsafe) as refused:
        layers.ensure(env_id(1))
    assert refused.value.job_error().type == "environment_unsafe"
    assert layers.present() == []
    assert list((tmp_path / "cache").iterdir()) == []
    assert not (tmp_path / "escape.py").exists()


@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("venv/lib/python3.11/site-packages/x.py", "no custom_nodes"),
        ("custom_nodes/pack/__init__.py", "no venv site-packages"),
    ],
)
def test_an_archive_without_one_of_the_layers_folders_is_corrupt(
    tmp_path: Path, member: str, why: str
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(*_file(member, b"x"))
    blobs = InMemoryBlobStore()
    store(blobs, env_id(1), buf.getvalue())
    layers = cache(tmp_path, blobs)
    with pytest.raises(LayerCorrupt, match=why):
        layers.ensure(env_id(1))
    assert layers.present() == [] and list((tmp_path / "cache").iterdir()) == []
