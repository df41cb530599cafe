"""Environments built through the job pipeline, on the emulators: POST /environments queues
the creator's build job; the worker's build-job runner builds the pack from a loopback git
server (real git, real pip on wheels made here) and stores the layer; its done flag, through
completion, makes the environment ready with its catalogue, and a job using the pack's node
type passes pre-flight; a pack pinning another torch and a missing commit end `failed`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyburst.domain.jobs import transition
from comfyburst.schema import DoneManifest, Job, VmRef
from comfyburst.services.complete import CompletionDeps, StorageObject, handle_done_flag
from comfyburst.services.environments import build_job_id
from comfyburst.states import JobState
from comfyburst_worker.env_build import LayerBuilder
from comfyburst_worker.env_job import EnvBuildRunner, archive_name
from tests._env_pack_support import (
    NODE_TYPE,
    git_http_server,
    make_base_venv,
    make_wheelhouse,
    pip_args,
    serve_pack,
)
from tests.test_api_emulator import settings, standin  # noqa: F401  (module fixtures)
from tests.test_environments_api import KEYS, _as, _cloud

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A loopback dumb-http git server over a folder of bare repositories."""
    root = tmp_path_factory.mktemp("gitserve")
    with git_http_server(root) as hostport:
        yield hostport, root


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("envpipe")
    wheels = make_wheelhouse(root / "wheels")
    return {"root": root, "wheels": wheels, "base_python": make_base_venv(root / "base", wheels)}


@pytest.fixture(autouse=True)
def _no_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def _serve(git_server: tuple[str, Path], material: dict[str, Path], name: str, **kw: str) -> str:
    """A pack repository served over loopback http; its pinned pack text."""
    hostport, served = git_server
    return serve_pack(served, hostport, material["root"] / "work", name, **kw)


@pytest.fixture
def cloud(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    blob_store: Any,
    signer: Any,
    publisher: Any,
    git_server: Any,
) -> Any:
    hostport = git_server[0]
    return _cloud(
        settings,
        standin,
        blob_store,
        signer,
        publisher,
        http_model_hosts=[hostport],
        custom_node_sources=[f"{hostport}/owner"],
        trusted_custom_node_sources=[],
    )


def _build_and_complete(
    cloud: Any, material: dict[str, Path], env_id: str, hostport: str, registry: Any = None
) -> Any:
    """What a VM does with the build job (claim, run the build, write the done flag) and what
    the done trigger does with the flag; `registry`: the builder's (registry packs)."""
    job_id = build_job_id(env_id)
    vm = VmRef(name="apitest-a1", zone="zone-a")

    def claim(job: Job) -> Job:
        return transition(job, JobState.RUNNING, cloud.deps.clock.now(), vm=vm)

    job = cloud.store.update_job(job_id, claim)
    runner = EnvBuildRunner(
        cloud.blobs,
        cloud.settings.outputs_bucket,
        material["root"] / "layers",
        LayerBuilder(
            base_python=material["base_python"],
            pip_args=pip_args(material["wheels"]),
            registry=registry,
        ),
        test_hostports=(hostport,),
    )
    result = runner.run(job)
    manifest = DoneManifest(
        job_id=job_id,
        attempt=job.attempt,
        vm=vm.name,
        status=result.status,
        error=result.error,
        timings=result.timings,
        written_at=cloud.deps.clock.now(),
        environment_built=result.environment_built,
    )
    name = f"jobs/{job_id}/done.json"
    signals = cloud.settings.signals_bucket
    cloud.blobs.write(signals, name, manifest.model_dump_json().encode(), "application/json")
    deps = CompletionDeps(
        store=cloud.store,
        blobs=cloud.blobs,
        signer=cloud.deps.signer,
        publisher=cloud.deps.publisher,
        clock=cloud.deps.clock,
        signals_bucket=signals,
        outputs_bucket=cloud.settings.outputs_bucket,
        environments=cloud.deps.environments,
    )
    outcome = handle_done_flag(deps, StorageObject(signals, name))
    assert outcome["outcome"] == "completed", outcome
    return cloud.client.get(f"/environments/{env_id}", headers=_as("ana"))


def _workflow(env_id: str) -> dict[str, Any]:
    return {
        "workflow": {
            "1": {"class_type": NODE_TYPE, "inputs": {"value": 3}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        },
        "options": {"environment": env_id},
    }


def test_a_new_environment_is_built_by_its_creators_job_and_then_runs_jobs(
    cloud: Any, material: dict[str, Path], git_server: Any
) -> None:
    pack = _serve(git_server, material, "good-pack")
    created = cloud.client.post("/environments", json={"packs": [pack]}, headers=_as("ana"))
    assert created.status_code == 201, created.get_json()
    env_id = created.get_json()["id"]
    assert created.get_json()["state"] == "building"
    build = cloud.store.get_job(build_job_id(env_id))
    assert build is not None and build.caller == "key:ana"
    assert build.environment_build is not None and build.environment_build.packs == [pack]
    assert build.gpu_class == "default"  # the deployment's default class
    # Asked again: the same environment, no second build job.
    again = cloud.client.post("/environments", json={"packs": [pack]}, headers=_as("ana"))
    assert again.status_code == 200 and again.get_json()["id"] == env_id
    # Building: a job naming it is refused before anything is written.
    assert cloud.submit(_workflow(env_id), **_as("ana")).status_code == 409

    ready = _build_and_complete(cloud, material, env_id, git_server[0])
    assert ready.get_json()["state"] == "ready", ready.get_json()
    assert ready.get_json()["node_types"] == [NODE_TYPE]
    assert cloud.blobs.read(cloud.settings.outputs_bucket, archive_name(env_id)) is not None
    # Pre-flight knows the pack's node type (and its inputs) now.
    accepted = cloud.submit(_workflow(env_id), **_as("ana"))
    assert accepted.status_code in (201, 202), accepted.get_json()
    wrong = _workflow(env_id)
    wrong["workflow"]["1"]["inputs"]["value"] = "not a number"
    rejected = cloud.submit(wrong, **_as("ana"))
    assert (
        rejected.status_code == 422 and rejected.get_json()["error"]["code"] == "workflow_invalid"
    )
    assert "invalid_input_type" in str(rejected.get_json())  # the node's own INT input
    # Private (an untrusted pack): bo cannot use it.
    refused = cloud.submit(_workflow(env_id), **{"X-API-Key": KEYS["bo"]})
    assert refused.status_code == 422


@pytest.mark.parametrize(
    ("name", "requirements", "missing", "expected"),
    [
        ("torch-pin", "torch==0.0.1\n", False, "conflict with the image's packages"),
        ("gone-commit", "cbenvdep==1.0\n", True, f"commit {'0' * 40} does not exist"),
    ],
)
def test_a_build_that_fails_fails_its_environment_with_the_pack_and_why(
    cloud: Any,
    material: dict[str, Path],
    git_server: Any,
    name: str,
    requirements: str,
    missing: bool,
    expected: str,
) -> None:
    pack = _serve(git_server, material, name, requirements=requirements)
    if missing:
        pack = pack.rpartition("@")[0] + "@" + "0" * 40
    created = cloud.client.post("/environments", json={"packs": [pack]}, headers=_as("ana"))
    env_id = created.get_json()["id"]
    failed = _build_and_complete(cloud, material, env_id, git_server[0]).get_json()
    assert failed["state"] == "failed"
    assert failed["error"].startswith(pack) and expected in failed["error"]
    job = cloud.store.get_job(build_job_id(env_id))
    assert job.state is JobState.FAILED and job.error.type == "environment_build"
    refused = cloud.submit(_workflow(env_id), **_as("ana"))
    assert (
        refused.status_code == 422 and "failed to build" in refused.get_json()["error"]["message"]
    )
