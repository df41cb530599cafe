"""Registry packs through the API and the build pipeline on the emulators, with the registry
stand-in (localcloud/registry_standin.py) as the deployment's `custom_node_registry_url`:
`registry:ID@VERSION` is asked for, canonical `ID@VERSION`; the build job's runner, given the
registry the deployment config names (what a VM gets), fetches and builds it, and a job using
its node type passes pre-flight. An unknown version fails its build naming it; a deployment
without a registry, a registry id or version that is malformed: 4xx, nothing written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyburst_worker.env_registry import registry_of
from localcloud.registry_standin import RegistryStandin, serve
from tests._env_pack_support import make_base_venv, make_wheelhouse
from tests.test_api_emulator import settings, standin  # noqa: F401  (module fixtures)
from tests.test_env_registry import NODE, SHOW, registry_pack_folder
from tests.test_environments_api import _as, _cloud, _documents
from tests.test_environments_build_pipeline import _build_and_complete

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryStandin]:
    folder = registry_pack_folder(tmp_path_factory.mktemp("regpack") / "p", "cb-double", "1.0.2")
    running = RegistryStandin()
    running.add_folder("cb-double", "1.0.2", folder)
    with serve(running):
        yield running


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("regpipe")
    wheels = make_wheelhouse(root / "wheels")
    return {"root": root, "wheels": wheels, "base_python": make_base_venv(root / "base", wheels)}


@pytest.fixture(autouse=True)
def _no_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def _registry_cloud(base: tuple[Any, ...], registry: RegistryStandin, **extra: Any) -> Any:
    hostport = registry.url.removeprefix("http://")
    return _cloud(
        *base,
        http_model_hosts=[hostport],
        custom_node_sources=["registry:*"],
        trusted_custom_node_sources=["registry:cb-double"],
        **extra,
    )


@pytest.fixture
def parts(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    blob_store: Any,
    signer: Any,
    publisher: Any,
) -> tuple[Any, ...]:
    return (settings, standin, blob_store, signer, publisher)


def test_a_registry_pack_is_asked_for_built_and_runs_jobs(
    parts: tuple[Any, ...], registry: RegistryStandin, material: dict[str, Path]
) -> None:
    cloud = _registry_cloud(parts, registry, custom_node_registry_url=registry.url)
    created = cloud.client.post(
        "/environments", json={"packs": ["registry:cb-double@1.0.2"]}, headers=_as("ana")
    )
    assert created.status_code in (200, 201), created.get_json()
    view = created.get_json()
    assert view["packs"] == ["cb-double@1.0.2"] and view["private"] is False
    # What a VM is given: the deployment config names the registry.
    fetcher = registry_of(cloud.settings.deployment_config())
    assert fetcher is not None and fetcher.base_url == registry.url
    hostport = registry.url.removeprefix("http://")
    ready = _build_and_complete(cloud, material, view["id"], hostport, registry=fetcher)
    assert ready.get_json()["state"] == "ready", ready.get_json()
    assert ready.get_json()["node_types"] == sorted([NODE, SHOW])
    job = {
        "workflow": {
            "1": {"class_type": NODE, "inputs": {"value": 3}},
            "2": {"class_type": SHOW, "inputs": {"value": ["1", 0]}},
        },
        "options": {"environment": view["id"]},
    }
    accepted = cloud.submit(job, **_as("ana"))
    assert accepted.status_code in (201, 202), accepted.get_json()


def test_a_version_the_registry_lacks_fails_its_build_naming_it(
    parts: tuple[Any, ...], registry: RegistryStandin, material: dict[str, Path]
) -> None:
    cloud = _registry_cloud(parts, registry, custom_node_registry_url=registry.url)
    created = cloud.client.post(
        "/environments", json={"packs": ["cb-double@7.7.7"]}, headers=_as("ana")
    )
    env_id = created.get_json()["id"]
    fetcher = registry_of(cloud.settings.deployment_config())
    hostport = registry.url.removeprefix("http://")
    failed = _build_and_complete(cloud, material, env_id, hostport, registry=fetcher).get_json()
    assert failed["state"] == "failed"
    assert failed["error"].startswith("cb-double@7.7.7: the registry has no version 7.7.7")


@pytest.mark.parametrize(
    ("pack", "status", "code", "words"),
    [
        ("cb-double@1.0.2", 403, "registry_not_configured", "custom_node_registry_url"),
        ("cb-double@latest", 400, "environment_invalid", "not a released version"),
        ("registry:-bad@1.0.0", 400, "environment_invalid", "not a registry id"),
        ("cb double@1.0.0", 400, "environment_invalid", "not a registry id"),
    ],
)
def test_registry_packs_without_a_registry_or_malformed_are_refused_writing_nothing(
    parts: tuple[Any, ...],
    registry: RegistryStandin,
    pack: str,
    status: int,
    code: str,
    words: str,
) -> None:
    cloud = _registry_cloud(parts, registry)  # no custom_node_registry_url
    refused = cloud.client.post("/environments", json={"packs": [pack]}, headers=_as("ana"))
    assert refused.status_code == status, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == code and words in error["message"]
    assert error.get("field") == "packs.0"
    assert _documents(cloud) == [] and cloud.nothing_written()
