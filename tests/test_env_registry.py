"""Registry packs (`ID@VERSION`) in the worker's build (env_registry, env_build): the version's
download URL read from the registry stand-in (localcloud/registry_standin.py, loopback), the
URL checked, the zip checked and unpacked as the build's user, then the same requirements and
probe as a git pack. Every refusal is a BuildFailed naming the pack; nothing is unpacked."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyburst_worker.env_build import BuildFailed, LayerBuilder
from comfyburst_worker.env_registry import UNZIP, RegistryFetcher, RegistryPack, registry_of
from localcloud.registry_standin import RegistryStandin, serve
from tests._env_pack_support import (
    double_and_show_pack,
    make_base_venv,
    make_wheelhouse,
    pip_args,
)

NODE, SHOW = "CbRegistryDouble", "CbRegistryShow"
PACK_INIT = double_and_show_pack(NODE, SHOW)


def registry_pack_folder(folder: Path, node_id: str, version: str) -> Path:
    """A registry pack's files as its publisher zips them: code, requirements, pyproject."""
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(PACK_INIT)
    (folder / "requirements.txt").write_text("cbenvdep==1.0\n")
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "{node_id}"\nversion = "{version}"\n'
    )
    return folder


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as zf:
        warnings.simplefilter("ignore")  # a duplicate name is what one test wants
        for info, data in entries:
            zf.writestr(info, data)
    return out.getvalue()


def _link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.fixture
def registry() -> Iterator[RegistryStandin]:
    with serve(RegistryStandin()) as running:
        yield running


def _fetcher(registry: RegistryStandin, **kw: object) -> RegistryFetcher:
    hostport = registry.url.removeprefix("http://")
    return RegistryFetcher(base_url=registry.url, test_hostports=(hostport,), **kw)  # type: ignore[arg-type]


def _unpack(registry: RegistryStandin, text: str, target: Path, **kw: object) -> None:
    builder = LayerBuilder(base_python=Path(sys.executable), registry=_fetcher(registry, **kw))
    builder.fetch_pack(text, target)


@pytest.mark.slow
def test_a_registry_pack_is_built_like_a_git_pack(
    registry: RegistryStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    wheels = make_wheelhouse(tmp_path / "wheels")
    base = make_base_venv(tmp_path / "base", wheels)
    registry.add_folder("cb-double", "1.0.2", registry_pack_folder(tmp_path / "p", "x", "1"))
    builder = LayerBuilder(base_python=base, pip_args=pip_args(wheels), registry=_fetcher(registry))
    built = builder.build(["cb-double@1.0.2"], tmp_path / "layer")
    assert built.node_types == {"cb-double@1.0.2": sorted([NODE, SHOW])}
    nodes = tmp_path / "layer" / "custom_nodes" / "cb-double"
    assert (nodes / "__init__.py").read_text() == PACK_INIT
    site = next((tmp_path / "layer" / "venv").glob("lib/python*/site-packages"))
    assert (site / "cbenvdep" / "__init__.py").is_file()  # its requirements, as for git packs
    assert "/nodes/cb-double/versions/1.0.2" in registry.requests


def test_an_unknown_version_fails_naming_the_pack(
    registry: RegistryStandin, tmp_path: Path
) -> None:
    with pytest.raises(BuildFailed) as failed:
        _unpack(registry, "cb-missing@9.9.9", tmp_path / "out")
    assert failed.value.pack == "cb-missing@9.9.9"
    assert "the registry has no version 9.9.9 of cb-missing" in failed.value.message
    assert not (tmp_path / "out").exists()


def test_a_download_url_off_the_allowed_hosts_is_refused_before_any_download(
    registry: RegistryStandin, tmp_path: Path
) -> None:
    registry.add_archive("cb-elsewhere", "1.0.0", _zip([("__init__.py", b"")]))
    registry.download_urls[("cb-elsewhere", "1.0.0")] = "https://files.example.org/p.zip"
    with pytest.raises(BuildFailed) as refused:
        _unpack(registry, "cb-elsewhere@1.0.0", tmp_path / "out", download_hosts=("example.com",))
    assert "the registry's download URL" in refused.value.message
    assert "custom_node_registry_download_hosts" in refused.value.message
    assert not any(r.startswith("/archives/") for r in registry.requests)
    # http to a host that is not the test host:port is refused by the same rule.
    registry.download_urls[("cb-elsewhere", "1.0.0")] = "http://files.example.org/p.zip"
    with pytest.raises(BuildFailed, match="download URL"):
        _unpack(registry, "cb-elsewhere@1.0.0", tmp_path / "out", download_hosts=("example.org",))


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([(_link("__init__.py", "/etc/passwd"), b"/etc/passwd")], "unsafe member"),
        ([("../escape.py", b"x")], "unsafe member"),
        ([("/abs.py", b"x")], "unsafe member"),
        ([("a\\..\\b.py", b"x")], "unsafe member"),
        ([("__init__.py", b"1"), ("__init__.py", b"2")], "twice"),
    ],
    ids=["link", "dotdot", "absolute", "backslash", "duplicate"],
)
def test_an_unsafe_archive_is_refused_and_nothing_is_unpacked(
    registry: RegistryStandin, tmp_path: Path, entries: list[tuple[object, bytes]], why: str
) -> None:
    registry.add_archive("cb-bad", "1.0.0", _zip(entries))  # type: ignore[arg-type]
    with pytest.raises(BuildFailed) as refused:
        _unpack(registry, "cb-bad@1.0.0", tmp_path / "out")
    assert refused.value.pack == "cb-bad@1.0.0" and why in refused.value.message
    assert not (tmp_path / "out").exists()


def test_archives_past_the_limits_are_refused(registry: RegistryStandin, tmp_path: Path) -> None:
    registry.add_archive("cb-big", "1.0.0", _zip([("__init__.py", b"0" * 50_000)]))
    with pytest.raises(BuildFailed, match="larger than 1000 bytes"):
        _unpack(registry, "cb-big@1.0.0", tmp_path / "a", max_archive_bytes=1000)
    with pytest.raises(BuildFailed, match="unpacks to more than 20000 bytes"):
        _unpack(registry, "cb-big@1.0.0", tmp_path / "b", max_unpacked_bytes=20_000)
    registry.add_archive("cb-junk", "1.0.0", b"not a zip at all")
    with pytest.raises(BuildFailed, match="not a zip"):
        _unpack(registry, "cb-junk@1.0.0", tmp_path / "c")
    assert not any((tmp_path / n).exists() for n in "abc")


def test_the_build_users_unpack_refuses_a_link_the_worker_let_through(tmp_path: Path) -> None:
    # The second check, as the build's user: fed directly (the worker's check is skipped).
    data = _zip([(_link("x", "/etc"), b"/etc")])
    with tempfile.TemporaryFile() as stdin:
        stdin.write(data)
        stdin.seek(0)
        done = subprocess.run(
            [sys.executable, "-c", UNZIP, str(tmp_path / "t"), "100000", "100000"],
            stdin=stdin,
            capture_output=True,
            text=True,
        )
    assert done.returncode != 0 and "unsafe member" in done.stderr
    assert not (tmp_path / "t" / "x").exists()


def test_a_builder_without_a_registry_fails_registry_packs(tmp_path: Path) -> None:
    with pytest.raises(BuildFailed) as failed:
        LayerBuilder(base_python=Path(sys.executable)).fetch_pack("cb@1.0.0", tmp_path / "o")
    assert "names no Comfy registry (custom_node_registry_url)" in failed.value.message
    assert registry_of(object()) is None
    assert RegistryPack("cb", "1.0.0").folder == "cb"
