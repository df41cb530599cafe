"""An environment build as the build's own user (`env_build_as`), with real git and pip: that
user makes the layer folder and writes everything in it (the worker writes nothing there), pip
is the configured command, and the build folder, holding the pack's code, is deleted through
that user once the archive is stored, or when the build fails.

The "other user" is a wrapper that logs each command and runs it under umask 077, while this
process runs under umask 000: a file the worker itself made in the layer would be group- or
world-writable. The image's real users are checked by the bake rehearsal (tests/bake).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from comfyburst.schema import DoneStatus, EnvironmentBuild, Job, RequestSummary
from comfyburst_worker.env_build import LayerBuilder
from comfyburst_worker.env_job import EnvBuildRunner, archive_name, build_folder
from tests._env_pack_support import make_base_venv, make_pack_repo, make_wheelhouse, pip_args
from tests._worker_support import local_config, local_settings
from tests.fakes import InMemoryBlobStore

pytestmark = pytest.mark.slow

ENV_ID = "env-" + "2" * 64


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("envbuilduser")
    wheels = make_wheelhouse(root / "wheels")
    return {"root": root, "wheels": wheels, "base_python": make_base_venv(root / "base", wheels)}


@pytest.fixture(autouse=True)
def _no_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _wrapper(path: Path, log: Path, body: str = 'umask 077\nexec "$@"\n') -> Path:
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n{body}')
    path.chmod(0o755)
    return path


def _job(packs: list[str]) -> Job:
    now = datetime.now(UTC)
    summary = RequestSummary(
        node_count=0, class_types=[], models=[], input_names=[], workflow_bytes=0
    )
    return Job(
        job_id="c" * 32,
        request=summary,
        created_at=now,
        deadline_at=now + timedelta(hours=1),
        state_changed_at=now,
        environment_build=EnvironmentBuild(environment_id=ENV_ID, packs=packs),
    )


def _pack(material: dict[str, Path], name: str, **kw: str) -> str:
    repo = material["root"] / "repos" / "owner" / name
    return f"file://{repo}@{make_pack_repo(repo, **kw)}"


def _runner(material: dict[str, Path], tmp_path: Path) -> tuple[EnvBuildRunner, Path, Path]:
    log, pip_log = tmp_path / "as-user.log", tmp_path / "pip.log"
    as_user = _wrapper(tmp_path / "as-user", log)
    pip = _wrapper(tmp_path / "pip", pip_log, f'exec {sys.executable} -m pip "$@"\n')
    builder = LayerBuilder(
        base_python=material["base_python"],
        pip_args=pip_args(material["wheels"]),
        pip_command=(str(pip),),
        as_user=(str(as_user),),
    )
    runner = EnvBuildRunner(InMemoryBlobStore(), "models", tmp_path / "layers", builder)
    # The pack's URL is file:// here: the checks before git are test_environments_build's.
    runner._check_pack = lambda text: None  # type: ignore[method-assign]
    return runner, log, pip_log


def test_the_build_user_makes_and_writes_the_layer_and_runs_the_configured_pip(
    material: dict[str, Path], tmp_path: Path, open_umask: None
) -> None:
    runner, log, pip_log = _runner(material, tmp_path)
    assert runner.builder is not None
    layer = tmp_path / "layers" / "builds" / ENV_ID
    built = runner.builder.build([_pack(material, "user-pack")], layer, tmp_path / "a.tar.gz")
    commands = log.read_text().splitlines()
    assert commands[0] == f"mkdir -p -- {layer / 'custom_nodes'}"
    # Everything in the layer came through the build user (umask 077): nothing the worker made.
    loose = [
        str(p.relative_to(layer))
        for p in [layer, *layer.rglob("*")]
        if not p.is_symlink() and p.lstat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ]
    assert loose == []
    assert "torch==2.0.0" in (layer / "base-constraints.txt").read_text().splitlines()
    # pip is the configured command (run as the build user), with the layer venv as its target.
    assert any(f"{tmp_path / 'pip'} --python {layer}/venv/bin/python" in c for c in commands)
    assert "install" in pip_log.read_text()
    # Even whether a pack has requirements is asked as that user (the worker may not see in).
    assert f"test -f {layer}/custom_nodes/user-pack/requirements.txt" in commands
    assert built.archive == tmp_path / "a.tar.gz" and built.archive.stat().st_size > 0


def test_the_build_folder_is_deleted_through_the_build_user_after_the_upload(
    material: dict[str, Path], tmp_path: Path
) -> None:
    runner, log, _ = _runner(material, tmp_path)
    result = runner.run(_job([_pack(material, "private-pack")]))
    assert result.status is DoneStatus.SUCCEEDED, result.error
    assert runner.blobs.read("models", archive_name(ENV_ID)) is not None
    layer = build_folder(tmp_path / "layers", ENV_ID)
    assert not layer.exists()
    assert list((tmp_path / "layers").glob("*.tar.gz")) == []
    assert log.read_text().splitlines()[-1] == f"rm -rf -- {layer}"


def test_a_failed_build_deletes_its_folder_too(material: dict[str, Path], tmp_path: Path) -> None:
    runner, log, _ = _runner(material, tmp_path)
    broken = _pack(material, "broken-pack", init_text="raise RuntimeError('broken here')\n")
    result = runner.run(_job([broken]))
    assert result.status is DoneStatus.FAILED and result.error is not None
    assert "broken here" in result.error.message
    layer = build_folder(tmp_path / "layers", ENV_ID)
    assert not layer.exists() and log.read_text().splitlines()[-1] == f"rm -rf -- {layer}"


def test_the_pip_command_is_a_setting(tmp_path: Path) -> None:
    settings = local_settings(
        "http://127.0.0.1:9",
        tmp_path / "models",
        env_base_python=Path("/usr/bin/python3"),
        env_build_as="sudo -n -u comfyburst-build --",
        env_build_user="comfyburst-build",
        env_pip_command="/opt/comfyburst/tools/bin/pip",
    )
    builder = EnvBuildRunner.of_settings(settings, InMemoryBlobStore(), local_config()).builder
    assert builder is not None and builder.pip_command == ("/opt/comfyburst/tools/bin/pip",)
    default = local_settings(
        "http://127.0.0.1:9",
        tmp_path / "models",
        env_base_python=Path("/usr/bin/python3"),
        env_build_as="sudo -n -u comfyburst-build --",
        env_build_user="comfyburst-build",
    )
    builder = EnvBuildRunner.of_settings(default, InMemoryBlobStore(), local_config()).builder
    assert builder is not None and builder.pip_command == (sys.executable, "-m", "pip")
