"""The worker's environment build (comfyburst_worker.env_build) with real git, real pip and
wheels made here: a pack's layer is built on top of a base venv that is never changed; a pack
pinning another torch, a missing commit and a pack whose import raises each fail clearly."""

from __future__ import annotations

import os
import subprocess
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from comfyburst.domain.jobs import transition
from comfyburst.preflight import Catalogue
from comfyburst.schema import (
    DoneManifest,
    DoneStatus,
    Job,
    Lease,
    VmRecord,
    VmRef,
)
from comfyburst.states import JobState
from comfyburst_worker.env_build import BuildFailed, LayerBuilder
from comfyburst_worker.env_job import EnvBuildRunner, archive_name
from tests._env_pack_support import (
    NODE_TYPE,
    build_job,
    git_http_server,
    make_base_venv,
    make_pack_repo,
    make_wheelhouse,
    pip_args,
    serve_pack,
    tree_hash,
)
from tests._worker_support import local_config, local_settings, make_agent
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("envbuild")
    wheels = make_wheelhouse(root / "wheels")
    base = make_base_venv(root / "base", wheels)
    return {"root": root, "wheels": wheels, "base_python": base, "base": root / "base"}


@pytest.fixture(autouse=True)
def _no_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def _builder(material: dict[str, Path]) -> LayerBuilder:
    return LayerBuilder(base_python=material["base_python"], pip_args=pip_args(material["wheels"]))


def _pack(material: dict[str, Path], name: str, **kw: str) -> str:
    repo = material["root"] / "repos" / "owner" / name
    commit = make_pack_repo(repo, **kw)
    return f"file://{repo}@{commit}"


def test_a_pack_is_built_into_a_layer_and_its_node_types_read(
    material: dict[str, Path], tmp_path: Path
) -> None:
    before = tree_hash(material["base"])
    pack = _pack(material, "good-pack")
    built = _builder(material).build([pack], tmp_path / "layer")
    assert built.node_types == {pack: [NODE_TYPE]}
    assert built.all_node_types == [NODE_TYPE]
    # Its /object_info entry is one pre-flight reads (inputs checked before a GPU is paid).
    entry = Catalogue.from_object_info(built.object_info).get(NODE_TYPE)
    assert entry is not None and [i.name for i in entry.inputs] == ["value"]
    assert entry.outputs == ("INT",)
    # The requirement landed in the layer, torch (the base's) did not.
    site = next((tmp_path / "layer" / "venv").glob("lib/python*/site-packages"))
    assert (site / "cbenvdep" / "__init__.py").is_file()
    assert not (site / "torch").exists()
    with tarfile.open(built.archive) as tar:
        names = tar.getnames()
    assert "custom_nodes/good-pack/__init__.py" in names
    assert any(n.endswith("cbenvdep/__init__.py") for n in names)
    assert tree_hash(material["base"]) == before
    # The layer runs its node with the base's interpreter: its packages on PYTHONPATH.
    probe = (
        "import importlib.util,sys;s=importlib.util.spec_from_file_location('p',sys.argv[1]);"
        "m=importlib.util.module_from_spec(s);s.loader.exec_module(m);"
        f"print(m.NODE_CLASS_MAPPINGS['{NODE_TYPE}']().run(21)[0])"
    )
    init = tmp_path / "layer" / "custom_nodes" / "good-pack" / "__init__.py"
    ran = subprocess.run(
        [str(material["base_python"]), "-c", probe, str(init)],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.strip() == "42"


def test_a_pack_pinning_another_torch_fails_and_the_base_is_unchanged(
    material: dict[str, Path], tmp_path: Path
) -> None:
    before = tree_hash(material["base"])
    pack = _pack(material, "torch-pin", requirements="torch==0.0.1\n")
    with pytest.raises(BuildFailed) as failed:
        _builder(material).build([pack], tmp_path / "layer")
    assert failed.value.pack == pack
    assert "conflict with the image's packages" in failed.value.message
    assert "torch" in failed.value.text()
    assert tree_hash(material["base"]) == before
    site = next((tmp_path / "layer" / "venv").glob("lib/python*/site-packages"))
    assert not (site / "torch").exists()


def test_a_commit_that_does_not_exist_fails(material: dict[str, Path], tmp_path: Path) -> None:
    pack = _pack(material, "no-commit")
    missing = pack.rpartition("@")[0] + "@" + "0" * 40
    before = tree_hash(material["base"])
    with pytest.raises(BuildFailed) as failed:
        _builder(material).build([missing], tmp_path / "layer")
    assert failed.value.pack == missing
    assert f"commit {'0' * 40} does not exist" in failed.value.message
    assert tree_hash(material["base"]) == before


def test_a_pack_whose_import_raises_fails_with_its_traceback(
    material: dict[str, Path], tmp_path: Path
) -> None:
    pack = _pack(material, "raises", init_text="raise RuntimeError('pack is broken here')\n")
    before = tree_hash(material["base"])
    with pytest.raises(BuildFailed) as failed:
        _builder(material).build([pack], tmp_path / "layer")
    assert failed.value.pack == pack
    assert failed.value.message == "importing the pack raised"
    assert "pack is broken here" in failed.value.tail
    assert tree_hash(material["base"]) == before


def test_a_pack_without_node_types_fails(material: dict[str, Path], tmp_path: Path) -> None:
    pack = _pack(material, "empty", init_text="NODE_CLASS_MAPPINGS = {}\n")
    with pytest.raises(BuildFailed, match="adds no node types"):
        _builder(material).build([pack], tmp_path / "layer")


def _build_job(packs: list[str]) -> Job:
    return build_job("env-" + "1" * 64, packs)


def test_the_worker_checks_each_pack_again_before_git_runs(tmp_path: Path) -> None:
    ran: list[object] = []

    def run(*args: object, **kw: object) -> object:
        ran.append(args)
        raise AssertionError("no command may run for a refused pack")

    builder = LayerBuilder(base_python=Path("/nonexistent/python"), run=run)  # type: ignore[arg-type]
    blobs = InMemoryBlobStore()
    runner = EnvBuildRunner(blobs, "models", tmp_path, builder)
    for pack in (
        f"file:///etc/owner/repo@{'a' * 40}",  # not https
        f"https://127.0.0.1/owner/repo@{'a' * 40}",  # an address, not a host
        f"http://127.0.0.1:9/owner/repo@{'a' * 40}",  # a loopback port not in the rule
    ):
        result = runner.run(_build_job([pack]))
        assert result.status is DoneStatus.FAILED and result.error is not None
        assert result.error.type == "environment_build"
        assert result.error.message.startswith(f"{pack}: refused")
    assert ran == [] and blobs.objects == {}


def test_a_vm_without_a_base_venv_fails_build_jobs(tmp_path: Path) -> None:
    runner = EnvBuildRunner(InMemoryBlobStore(), "models", tmp_path, None)
    result = runner.run(_build_job([f"https://github.com/o/r@{'a' * 40}"]))
    assert result.status is DoneStatus.FAILED and result.error is not None
    assert "cannot build environments" in result.error.message


def put_build_job(store: InMemoryJobStore, config: Any, job: Job, vm: VmRef) -> Job:
    """A build job as the API's dispatcher leaves it: `starting` on `vm`, with its lease."""
    now = datetime.now(UTC)
    job = transition(job, JobState.STARTING, now, vm=vm, dispatched_at=now)
    lease = Lease(job_id=job.job_id, expires_at=now + timedelta(seconds=config.lease_ttl_s))
    store.put_vm(VmRecord(name=vm.name, zone=vm.zone, lease=lease), None)
    store.create_job(job)
    return job


def test_the_agent_runs_a_build_job_and_its_done_flag_reports_what_it_built(
    material: dict[str, Path], tmp_path: Path, standin: str
) -> None:
    """The agent claims the build job its VM booted for, builds instead of prompting, stores
    the layer in the models bucket and writes the done flag with `environment_built`."""
    served = tmp_path / "served"
    with git_http_server(served) as hostport:
        pack = serve_pack(served, hostport, tmp_path / "work", "agent-pack")
        store, blobs = InMemoryJobStore(), InMemoryBlobStore()
        config = local_config(hostport)
        vm = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
        job = put_build_job(store, config, _build_job([pack]), vm)
        settings = local_settings(
            standin,
            tmp_path / "models",
            env_base_python=material["base_python"],
            env_pip_args=" ".join(pip_args(material["wheels"])),
            env_layers_dir=tmp_path / "layers",
            env_build_unisolated=True,  # no second user here
        )
        make_agent(settings, config, store, blobs, vm).run(job.job_id)
    raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
    assert raw is not None
    done = DoneManifest.model_validate_json(raw)
    assert done.status is DoneStatus.SUCCEEDED, done.error
    assert done.environment_built is not None
    assert done.environment_built.node_types == [NODE_TYPE]
    env_id = job.environment_build.environment_id  # type: ignore[union-attr]
    assert done.environment_built.archive == f"gs://models/{archive_name(env_id)}"
    assert blobs.read("models", archive_name(env_id)) is not None


def test_pack_code_never_runs_as_the_workers_user_unless_said(tmp_path: Path) -> None:
    """A base venv alone is not enough: without env_build_as (its own user) the VM refuses."""
    settings = local_settings(
        "http://127.0.0.1:9", tmp_path / "models", env_base_python=Path("/usr/bin/python3")
    )
    runner = EnvBuildRunner.of_settings(settings, InMemoryBlobStore(), local_config())
    assert runner.builder is None
    result = runner.run(_build_job([f"https://github.com/o/r@{'a' * 40}"]))
    assert result.error is not None and "cannot build environments" in result.error.message
    isolated = local_settings(
        "http://127.0.0.1:9",
        tmp_path / "models",
        env_base_python=Path("/usr/bin/python3"),
        env_build_as="sudo -n -u comfyburst-build --",
        env_build_user="comfyburst-build",
    )
    builder = EnvBuildRunner.of_settings(isolated, InMemoryBlobStore(), local_config()).builder
    assert builder is not None
    assert builder.as_user == ("sudo", "-n", "-u", "comfyburst-build", "--")
