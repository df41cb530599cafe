"""An environment build reads no configuration from the build user's home.

The build user (`comfyui` on the image) is also the user every job's pack code runs as, private
environments' included, and its home outlives jobs and restarts. A pack that writes a git or pip
configuration there must not reach a later build of another caller's environment (a shared one
is stored once and run by every caller). The "build user" here is a wrapper that, as sudo does,
resets HOME to that user's home.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from comfyburst_worker.env_build import BuildFailed, LayerBuilder
from comfyburst_worker.env_layers import unpack
from tests._env_pack_support import (
    GIT_ENV,
    make_base_venv,
    make_pack_repo,
    make_wheelhouse,
    pip_args,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def _poisoned_home(home: Path) -> None:
    """What a pack run as the build user can leave in its home: a global git configuration
    whose hook rewrites whatever a later checkout checks out."""
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    hook = hooks / "post-checkout"
    hook.write_text('#!/bin/sh\nprintf "\\nPLANTED = 1\\n" >> __init__.py\n')
    hook.chmod(0o755)
    (home / ".gitconfig").write_text(f"[core]\n\thooksPath = {hooks}\n")


def test_a_build_ignores_a_git_configuration_left_in_the_build_users_home(
    tmp_path: Path,
) -> None:
    wheels = make_wheelhouse(tmp_path / "wheels")
    base_python = make_base_venv(tmp_path / "base", wheels)
    home = tmp_path / "comfyui-home"
    _poisoned_home(home)
    as_user = tmp_path / "as-user"
    as_user.write_text(
        f'#!/bin/sh\nunset XDG_CONFIG_HOME GIT_CONFIG_GLOBAL\nexport HOME={home}\nexec "$@"\n'
    )
    as_user.chmod(0o755)
    repo = tmp_path / "repos" / "owner" / "shared-pack"
    commit = make_pack_repo(repo)
    builder = LayerBuilder(
        base_python=base_python,
        pip_args=pip_args(wheels),
        pip_command=(sys.executable, "-m", "pip"),
        as_user=(str(as_user),),
    )
    layer = tmp_path / "layers" / "builds" / "env-1"
    built = builder.build([f"file://{repo}@{commit}"], layer, tmp_path / "a.tar.gz")
    with tarfile.open(built.archive, "r:gz") as tar:
        member = tar.extractfile("custom_nodes/shared-pack/__init__.py")
        assert member is not None
        text = io.TextIOWrapper(member, encoding="utf-8").read()
    assert "PLANTED" not in text
    assert text == (repo / "__init__.py").read_text()


def test_a_pack_holding_a_link_fails_its_build_instead_of_every_job(tmp_path: Path) -> None:
    """A layer is unpacked on the VMs that run it without any link (env_layers.unpack): a pack
    whose checkout holds one must fail its build, not build "ready" and fail each job."""
    wheels = make_wheelhouse(tmp_path / "wheels")
    base_python = make_base_venv(tmp_path / "base", wheels)
    repo = tmp_path / "repos" / "owner" / "linked-pack"
    make_pack_repo(repo)
    (repo / "docs").symlink_to(".")
    git = ["git", "-C", str(repo)]
    env = {**os.environ, **GIT_ENV}
    for args in (["add", "-A"], ["commit", "-q", "-m", "a link"]):
        subprocess.run([*git, *args], check=True, env=env)
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, env=env, capture_output=True, text=True
    ).stdout.strip()
    builder = LayerBuilder(base_python=base_python, pip_args=pip_args(wheels))
    layer = tmp_path / "layers" / "builds" / "env-2"
    with pytest.raises(BuildFailed) as failed:
        built = builder.build([f"file://{repo}@{commit}"], layer, tmp_path / "a.tar.gz")
        unpack(built.archive, tmp_path / "unpacked")  # what a VM running a job would do
    assert "linked-pack/docs" in failed.value.text()
