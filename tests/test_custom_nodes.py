"""Local custom-node packs: what git says about them, the image list's lines, and the node
types the GPU lacks named with their pack, from the local cloud's pre-flight."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfy_node import _comfy
from comfy_node._vendor.comfyburst_core.client import ApiClient, ClientSettings  # the node's own
from comfy_node.missing_nodes import as_comfy_rejection, missing_node_types, unknown_node_id
from comfy_node.remote import RemoteJobError, run_job
from comfyburst.custom_nodes import (
    Pack,
    PackDirty,
    PackError,
    https_remote,
    local_packs,
    pack_source,
    public_remote,
    read_pack,
)
from comfyburst_cli.main import app

REMOTE = "https://github.com/example-org/ComfyUI-Example.git"


def make_pack(folder: Path, remote: str | None = REMOTE) -> str:
    """A git repository with one commit (and an origin when given); returns the commit."""
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "pack"], check=True)
    if remote:
        subprocess.run([*git, "remote", "add", "origin", remote], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return head.stdout.strip()


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        (REMOTE, REMOTE),
        ("git@github.com:example-org/ComfyUI-Example.git", REMOTE),
        ("ssh://git@github.com/example-org/ComfyUI-Example.git", REMOTE),
    ],
)
def test_https_remote(remote: str, expected: str) -> None:
    assert https_remote(remote) == expected


@pytest.mark.parametrize(
    ("remote", "message"),
    [
        ("http://github.com/a/b.git", "https only"),
        ("https://user:token@github.com/a/b.git", "credentials"),
        ("https://10.0.0.1/a/b.git", "IP address"),
        ("https://gitserver/a/b.git", "not a public host name"),
        ("/srv/git/pack", "https only"),
    ],
)
def test_https_remote_refuses(remote: str, message: str) -> None:
    with pytest.raises(PackError, match=message):
        https_remote(remote)


def test_public_remote_drops_credentials() -> None:
    assert (
        public_remote("https://user:token@github.com/a/b.git?x=1") == "https://github.com/a/b.git"
    )
    assert "token" not in public_remote("https://oauth2:token@gitlab.com/a/b.git")


def test_read_pack_gives_remote_commit_and_changes(tmp_path: Path) -> None:
    commit = make_pack(tmp_path / "ComfyUI-Example")
    pack = read_pack(tmp_path / "ComfyUI-Example")
    assert (pack.remote, pack.commit, pack.dirty) == (REMOTE, commit, False)
    assert pack.line() == f"ComfyUI-Example {REMOTE} {commit}"
    (tmp_path / "ComfyUI-Example" / "__init__.py").write_text("changed = True\n")
    assert read_pack(tmp_path / "ComfyUI-Example").dirty


def test_pack_source_is_the_one_url_at_commit_rule(tmp_path: Path) -> None:
    commit = "a" * 40
    ssh = Pack("p", tmp_path, "git@github.com:example-org/ComfyUI-Example.git", commit)
    assert pack_source(ssh) == f"{REMOTE}@{commit}"
    # A remote the image would not clone stays as it is: the API's URL rule names the problem.
    assert pack_source(Pack("p", tmp_path, "http://host.example/x/", commit)) == (
        f"http://host.example/x@{commit}"
    )
    with pytest.raises(PackError, match="not a git checkout with a remote"):
        pack_source(Pack("p", tmp_path, None, commit))
    with pytest.raises(PackError, match="no git commit checked out"):
        pack_source(Pack("p", tmp_path, REMOTE, None))
    dirty = Pack("p", tmp_path, REMOTE, commit, dirty=True)
    with pytest.raises(PackDirty, match="would not be on the GPU"):
        pack_source(dirty)  # the node refuses local changes
    assert pack_source(dirty, allow_dirty=True) == f"{REMOTE}@{commit}"  # the CLI warns


def test_local_packs_skip_disabled_and_hidden(tmp_path: Path) -> None:
    make_pack(tmp_path / "B-pack")
    make_pack(tmp_path / "a-pack")
    (tmp_path / "old.disabled").mkdir()
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "single_file_node.py").write_text("")
    assert [p.name for p in local_packs(tmp_path)] == ["a-pack", "B-pack"]


def test_image_nodes_writes_the_list_from_a_local_comfyui(tmp_path: Path) -> None:
    custom = tmp_path / "ComfyUI" / "custom_nodes"
    first = make_pack(custom / "ComfyUI-Example")
    second = make_pack(custom / "Other", "git@gitlab.com:someone/other-nodes.git")
    own = custom / "ComfyBurst"
    own.mkdir()
    (own / "pyproject.toml").write_text('[project]\nname = "comfyburst-node"\n')
    out = tmp_path / "custom_nodes.txt"
    out.write_text(
        "# header kept\n# second line\nOld https://github.com/o/old.git " + "0" * 40 + "\n"
    )
    result = CliRunner().invoke(
        app, ["image", "nodes", "--from-comfyui", str(tmp_path / "ComfyUI"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == [
        "# header kept",
        "# second line",
        f"ComfyUI-Example {REMOTE} {first}",
        f"Other https://gitlab.com/someone/other-nodes.git {second}",
    ]


def test_image_nodes_writes_nothing_when_a_pack_cannot_be_listed(tmp_path: Path) -> None:
    custom = tmp_path / "ComfyUI" / "custom_nodes"
    make_pack(custom / "Good")
    make_pack(custom / "NoRemote", remote=None)
    out = tmp_path / "custom_nodes.txt"
    out.write_text("# kept as it was\n")
    argv = ["image", "nodes", "--from-comfyui", str(tmp_path / "ComfyUI"), "--out", str(out)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert "NoRemote" in result.output and "no git remote" in result.output
    assert out.read_text() == "# kept as it was\n"
    skipped = CliRunner().invoke(app, [*argv, "--skip", "NoRemote"])
    assert skipped.exit_code == 0, skipped.output
    assert "Good https://" in out.read_text()


def test_image_nodes_without_custom_nodes_folder_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["image", "nodes", "--from-comfyui", str(tmp_path)])
    assert result.exit_code == 2
    assert "custom_nodes" in result.output


def test_unknown_node_id_reads_comfyuis_words_only() -> None:
    error = {
        "type": "invalid_prompt",
        "message": "Cannot execute because node Foo does not exist.",
        "details": "Node ID '#7'",
    }
    assert unknown_node_id(error) == "7"
    assert unknown_node_id({**error, "type": "prompt_no_outputs"}) is None
    assert unknown_node_id({**error, "message": "Prompt has no outputs"}) is None
    assert unknown_node_id(None) is None


def test_rejection_marks_every_node_of_a_missing_type() -> None:
    workflow = {
        "1": {"class_type": "Foo", "inputs": {}},
        "2": {"class_type": "SaveImage", "inputs": {}},
        "3": {"class_type": "Foo", "inputs": {}},
    }
    rejection = as_comfy_rejection("msg", ["Foo"], workflow)
    assert sorted(rejection["node_errors"]) == ["1", "3"]
    assert rejection["error"]["extra_info"] == {"missing_node_types": ["Foo"]}


def _workflow_with_unknown_types() -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
        "2": {"class_type": "LocalPackBlur", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "NotAnywhere", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "LocalPackBlur", "inputs": {"image": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
    }


@pytest.mark.emulator
def test_run_workflow_names_every_missing_type_and_its_local_pack(
    localcloud_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = make_pack(tmp_path / "ComfyUI-LocalPack")
    # What ComfyUI would say about where LocalPackBlur was loaded from.
    folders = {"LocalPackBlur": tmp_path / "ComfyUI-LocalPack"}
    monkeypatch.setattr(_comfy, "node_pack_folder", folders.get)
    client = ApiClient(ClientSettings())
    request = {"workflow": _workflow_with_unknown_types()}
    first = client.validate(request)
    assert not first["valid"]
    assert missing_node_types(client.validate, request, first["error"]) == [
        "LocalPackBlur",
        "NotAnywhere",
    ]
    with pytest.raises(RemoteJobError) as caught:
        run_job(client, request, is_image=lambda name: True)
    message = str(caught.value)
    assert f"LocalPackBlur: from ComfyUI-LocalPack ({REMOTE} @ {commit[:12]})" in message
    assert "NotAnywhere: not from a custom-node pack found here" in message
    assert "comfyburst image nodes --from-comfyui" in message
