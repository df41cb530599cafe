"""Registry packs in the pure rules: `registry:ID@VERSION` read as the canonical `ID@VERSION`,
malformed ids and versions refused with why, the deployer's `custom_node_registry_url` checked
at load, and a local pack ComfyUI-Manager installed from the registry (`.tracking` beside its
`pyproject.toml`, no git) named `ID@VERSION` by the node's and the CLI's one rule."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyburst.custom_nodes import (
    PackError,
    _plain_project_keys,
    local_packs,
    pack_source,
    read_pack,
    registry_install,
)
from comfyburst.domain.custom_node_sources import Pack, PackInvalid, SourcePolicy, parse_pack
from comfyburst.domain.environments import RegistryNotConfigured, plan_environment
from tests._api_support import make_settings

PYPROJECT = '[project]\nname = "ComfyUI-KJNodes"\nversion = "1.0.5"  # released\n'


def test_the_registry_prefix_names_the_same_pack() -> None:
    prefixed = parse_pack("registry:comfyui-kjnodes@1.0.5")
    assert prefixed == Pack("registry", "comfyui-kjnodes", "1.0.5")
    assert prefixed.text == "comfyui-kjnodes@1.0.5"
    assert SourcePolicy.of(["registry:comfyui-kjnodes"]).allows(prefixed)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("kjnodes@latest", "not a released version"),
        ("kjnodes@", "not a released version"),
        ("registry:@1.0.0", "not a registry id"),
        ("registry:-x@1.0.0", "not a registry id"),
        ("a/b@1.0.0", "not a registry id"),
        ("registry:registry:x@1.0.0", "not a registry id"),
    ],
)
def test_malformed_registry_packs_say_why(text: str, why: str) -> None:
    with pytest.raises(PackInvalid, match=why):
        parse_pack(text)


def test_a_registry_pack_where_no_registry_is_configured_is_refused() -> None:
    kw = {
        "sources": SourcePolicy.of(["registry:*"]),
        "trusted": SourcePolicy.of([]),
        "comfyui_commit": "0" * 40,
        "caller": "key:a",
    }
    with pytest.raises(RegistryNotConfigured) as refused:
        plan_environment(["x@1.0.0"], registry_configured=False, **kw)  # type: ignore[arg-type]
    assert refused.value.code == "registry_not_configured" and refused.value.field == "packs.0"
    planned = plan_environment(["x@1.0.0"], registry_configured=True, **kw)  # type: ignore[arg-type]
    assert [p.text for p in planned.packs] == ["x@1.0.0"]


def test_the_registry_url_is_checked_when_the_settings_load() -> None:
    assert make_settings().custom_node_registry_url is None
    ok = make_settings(custom_node_registry_url="https://registry.example.com/api/")
    assert ok.custom_node_registry_url == "https://registry.example.com/api"
    assert ok.deployment_config().custom_node_registry_url == "https://registry.example.com/api"
    for bad in (
        "http://registry.example.com",
        "https://169.254.169.254/",
        "https://localhost/",
        "https://registry.example.com:8443/",
        "https://registry.example.com/?token=1",
    ):
        with pytest.raises(ValidationError, match="custom_node_registry_url"):
            make_settings(custom_node_registry_url=bad)
    # The local cloud's stand-in: one of the URL rule's test host:ports.
    local = make_settings(
        http_model_hosts=["127.0.0.1:8123"], custom_node_registry_url="http://127.0.0.1:8123"
    )
    assert local.custom_node_registry_url == "http://127.0.0.1:8123"


def _registry_install(folder: Path, pyproject: str = PYPROJECT) -> Path:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (folder / "pyproject.toml").write_text(pyproject)
    (folder / ".tracking").write_text("__init__.py\npyproject.toml\n")
    return folder


def test_a_registry_install_is_its_id_at_its_version(tmp_path: Path) -> None:
    pack = read_pack(_registry_install(tmp_path / "custom_nodes" / "comfyui-kjnodes"))
    assert pack.remote is None and pack.registry == ("comfyui-kjnodes", "1.0.5")
    assert pack_source(pack) == "comfyui-kjnodes@1.0.5"
    assert parse_pack(pack_source(pack)).kind == "registry"
    assert "registry comfyui-kjnodes @ 1.0.5" in pack.describe()
    assert [p.registry for p in local_packs(tmp_path / "custom_nodes")] == [pack.registry]


def test_without_tracking_or_with_git_a_folder_is_no_registry_install(tmp_path: Path) -> None:
    plain = _registry_install(tmp_path / "plain")
    (plain / ".tracking").unlink()
    assert registry_install(plain) is None
    with pytest.raises(PackError, match="not a git checkout"):
        pack_source(read_pack(plain))
    # A git checkout is read as git, whatever else it holds.
    cloned = _registry_install(tmp_path / "cloned")
    git = ["git", "-C", str(cloned), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "p"]):
        subprocess.run([*git, *args], check=True)
    assert read_pack(cloned).registry is None
    broken = _registry_install(tmp_path / "broken", "[project\nname = ")
    assert registry_install(broken) is None


def test_the_plain_reader_of_python_3_10_reads_the_project_keys() -> None:
    text = '[tool.comfy]\nname = "no"\n[project]\nname = "Pack-X"  # c\nversion = \'2.1.0\'\n'
    assert _plain_project_keys(text) == ("Pack-X", "2.1.0")
    assert _plain_project_keys(PYPROJECT) == ("ComfyUI-KJNodes", "1.0.5")
    assert _plain_project_keys("[project]\n") == (None, None)
