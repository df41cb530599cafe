"""A git pack's commit must be on a branch or tag of the repository it names (env_git).

Git hosts serve a fork's commits through the parent's URL (one object store per fork network);
servers may answer a `want` of any object they hold (`uploadpack.allowAnySHA1InWant`, protocol
v2, dumb http). Each repository here holds a commit that only a pull-request ref, or nothing,
points to: fetched by id it exists, and the build still refuses it (also through the API and
the build job on the emulators, its environment `failed` naming it). Real git, local repos.
"""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from comfyburst_worker.env_build import BuildFailed, LayerBuilder
from tests._env_pack_support import GIT_ENV, git_http_server, make_pack_repo, serve_pack
from tests.test_api_emulator import settings, standin  # noqa: F401  (module fixtures)
from tests.test_environments_api import _as
from tests.test_environments_build_pipeline import (  # noqa: F401  (fixtures)
    _build_and_complete,
    _no_pip_config,
    cloud,
    git_server,
    material,
)

_ENV = {**os.environ, **GIT_ENV}


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, env=_ENV, capture_output=True, text=True
    )
    return done.stdout.strip()


def _side_commit(work: Path) -> str:
    """A commit made on a branch that is then deleted (its object stays); returns it."""
    _git(work, "checkout", "-q", "-b", "side")
    (work / "extra.py").write_text("VALUE = 1\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "side")
    commit = _git(work, "rev-parse", "HEAD")
    _git(work, "checkout", "-q", "-")
    return commit


def _served(tmp_path: Path, name: str) -> tuple[Path, Path, str]:
    """A pack repository (work tree) with a side commit, its bare copy; the side commit."""
    work = tmp_path / "work" / name
    make_pack_repo(work)
    side = _side_commit(work)
    bare = tmp_path / "served" / "owner" / name
    _git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return work, bare, side


def _fetch(bare_url: str, commit: str, target: Path) -> None:
    # A builder whose base is this interpreter: the checkout needs no venv.
    LayerBuilder(base_python=Path(sys.executable)).fetch_pack(f"{bare_url}@{commit}", target)


def test_a_commit_only_a_pull_request_ref_holds_is_refused(tmp_path: Path) -> None:
    _work, bare, side = _served(tmp_path, "pr-pack")
    _git(bare, "update-ref", "refs/pull/1/head", side)
    _git(bare, "branch", "-q", "-D", "side")
    url = f"file://{bare}"
    with pytest.raises(BuildFailed) as refused:
        _fetch(url, side, tmp_path / "out")
    assert refused.value.pack == f"{url}@{side}"
    assert f"commit {side} is not on any branch or tag of {url}" in refused.value.message


def test_an_unreferenced_commit_the_server_serves_by_id_is_refused(tmp_path: Path) -> None:
    _work, bare, side = _served(tmp_path, "loose-pack")
    _git(bare, "branch", "-q", "-D", "side")
    # What a fork network's shared store amounts to: the object is there, served by id.
    _git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    assert _git(bare, "cat-file", "-t", side) == "commit"
    with pytest.raises(BuildFailed) as refused:
        _fetch(f"file://{bare}", side, tmp_path / "out")
    assert "is not on any branch or tag" in refused.value.message


def test_a_tagged_only_commit_and_a_branch_commit_are_accepted(tmp_path: Path) -> None:
    work, bare, side = _served(tmp_path, "tag-pack")
    _git(bare, "tag", "-a", "-m", "release", "v1.0", side)
    _git(bare, "branch", "-q", "-D", "side")
    _fetch(f"file://{bare}", side, tmp_path / "tagged")
    assert (tmp_path / "tagged" / "extra.py").read_text() == "VALUE = 1\n"
    head = _git(work, "rev-parse", "HEAD")
    _fetch(f"file://{bare}", head, tmp_path / "branch")
    assert (tmp_path / "branch" / "__init__.py").is_file()


def test_a_build_with_its_own_home_fetches_the_refs_filtered(tmp_path: Path) -> None:
    """In a build git runs behind `env HOME=… XDG_…=…` (LayerBuilder._fresh_home): the refs'
    fetch still takes `--filter=tree:0` where the server filters (a promisor remote after it),
    not the unfiltered fallback that downloads every branch's and tag's trees."""
    work, bare, _side = _served(tmp_path, "filter-pack")
    _git(bare, "config", "uploadpack.allowFilter", "true")
    builder = LayerBuilder(base_python=Path(sys.executable))
    builder._home = tmp_path / "home"  # as build() sets it, in the layer's folder
    builder._home.mkdir()
    target = tmp_path / "out"
    builder.fetch_pack(f"file://{bare}@{_git(work, 'rev-parse', 'HEAD')}", target)
    assert _git(target, "config", "remote.origin.promisor") == "true"


def test_over_dumb_http_a_pull_request_commit_is_refused(tmp_path: Path) -> None:
    # Dumb http fetches any object by id and takes no filter: the fallback paths.
    work, bare, side = _served(tmp_path, "http-pack")
    _git(bare, "update-ref", "refs/pull/7/head", side)
    _git(bare, "branch", "-q", "-D", "side")
    _git(bare, "update-server-info")
    with git_http_server(tmp_path / "served") as hostport:
        url = f"http://{hostport}/owner/http-pack"
        with pytest.raises(BuildFailed) as refused:
            _fetch(url, side, tmp_path / "pr")
        assert f"is not on any branch or tag of {url}" in refused.value.message
        _fetch(url, _git(work, "rev-parse", "HEAD"), tmp_path / "main")
    assert (tmp_path / "main" / "__init__.py").is_file()


@pytest.mark.emulator
@pytest.mark.slow
def test_through_the_api_a_pull_request_commit_fails_its_environment_naming_it(
    cloud: Any, material: dict[str, Path], git_server: tuple[str, Path], tmp_path: Path
) -> None:
    hostport, served = git_server
    text = serve_pack(served, hostport, tmp_path / "work", "fork-pack")
    work, bare = tmp_path / "work" / "fork-pack", served / "owner" / "fork-pack"
    side = _side_commit(work)
    _git(work, "push", "-q", str(bare), f"{side}:refs/pull/1/head")
    _git(bare, "update-server-info")
    pack = text.rpartition("@")[0] + "@" + side
    created = cloud.client.post("/environments", json={"packs": [pack]}, headers=_as("ana"))
    assert created.status_code == 201, created.get_json()
    env_id = created.get_json()["id"]
    failed = _build_and_complete(cloud, material, env_id, hostport).get_json()
    assert failed["state"] == "failed"
    assert failed["error"].startswith(f"{pack}: commit {side} is not on any branch or tag of")
