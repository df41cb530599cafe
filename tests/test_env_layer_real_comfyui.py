"""A layer built by the worker's own build, on top of a real ComfyUI's venv, loaded by that
ComfyUI the way a VM loads it: a pack (a git repository served over loopback http, one
requirement from a wheel made here) built by a build job (env_job.EnvBuildRunner over
env_build.LayerBuilder, the ComfyUI venv as the base), stored in a bucket (fake-gcs-server),
downloaded and unpacked by the VM's layer cache (env_layers.LayerCache), named in the layer
file the worker writes (comfy_env.write_layer_file), and started through the image's start
(gpu_image/systemd/comfyui_start.py). Its node is then in /object_info as the build read it,
a prompt using it runs to success, and the base venv is unchanged.

Needs COMFYUI_DIR (a ComfyUI checkout) and its Python (COMFYUI_PYTHON, default: a `venv`
next to or inside COMFYUI_DIR); skipped otherwise."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from comfyburst.adapters.gcs import GcsBlobStore
from comfyburst.schema import DoneStatus
from comfyburst_worker.comfy_env import write_layer_file
from comfyburst_worker.env_build import LayerBuilder
from comfyburst_worker.env_job import EnvBuildRunner
from comfyburst_worker.env_layers import LayerCache
from localcloud import _procs
from localcloud.cloud import fake_gcs_binary
from tests._comfy_real_support import _python
from tests._env_pack_support import (
    build_job,
    double_and_show_pack,
    git_http_server,
    make_wheel,
    pip_args,
    serve_pack,
)

pytestmark = [pytest.mark.real_comfyui, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
START = REPO / "gpu_image" / "systemd" / "comfyui_start.py"
BUCKET = "models"
DOUBLE, SHOW = "CbLayerDouble", "CbLayerShow"
START_TIMEOUT_S = 300.0
PROMPT_TIMEOUT_S = 120.0


def _comfyui() -> tuple[Path, Path]:
    """COMFYUI_DIR and the Python that runs it; skips with the reason when there are none."""
    if not os.environ.get("COMFYUI_DIR"):
        pytest.skip("COMFYUI_DIR is not set (needs a real ComfyUI checkout)")
    comfy = Path(os.environ["COMFYUI_DIR"])
    if not (comfy / "main.py").is_file():
        pytest.skip(f"COMFYUI_DIR={comfy} has no main.py")
    python = _python(comfy)
    if python is None or not python.is_file():
        pytest.skip("set COMFYUI_PYTHON to the Python that runs ComfyUI")
    return comfy, python


def _venv_state(python: Path) -> dict[str, tuple[int, int]]:
    """Every file of the venv `python` belongs to (bytecode caches aside): size and mtime."""
    venv = python.parent.parent
    state = {}
    for top, dirs, files in os.walk(venv):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            stat = os.lstat(os.path.join(top, name))
            state[os.path.relpath(os.path.join(top, name), venv)] = (stat.st_size, stat.st_mtime_ns)
    return state


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[GcsBlobStore]:
    """A models bucket on a fake-gcs-server of this test's own."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage import Client

    port = _procs.free_port()
    argv = [str(fake_gcs_binary()), "-scheme=http", "-host=127.0.0.1", f"-port={port}"]
    argv += ["-backend=memory", f"-external-url=http://127.0.0.1:{port}"]
    service = _procs.spawn("gcs", argv, dict(os.environ), tmp_path / "gcs")
    try:
        url = f"http://127.0.0.1:{port}"
        _procs.wait_until(_procs.http_ok(f"{url}/_internal/healthcheck"), service, 60, "HTTP")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        client = Client(project="comfyburst-test", credentials=AnonymousCredentials())
        client.create_bucket(BUCKET)
        yield GcsBlobStore(client)
    finally:
        _procs.stop_services([service])


def _start_comfyui(
    comfy: Path, python: Path, layer_file: Path, root: Path
) -> tuple[_procs.Service, str]:
    """ComfyUI started through the image's start with `layer_file`; the service and its URL."""
    port = _procs.free_port()
    argv = [str(python), "-I", str(START), "main.py", "--cpu", "--listen", "127.0.0.1"]
    argv += ["--port", str(port), "--disable-auto-launch"]
    for name in ("output", "input", "temp", "user"):
        (root / name).mkdir(parents=True)
        argv += [f"--{name}-directory", str(root / name)]
    argv += ["--database-url", f"sqlite:///{root / 'comfyui.db'}"]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(root),
        "COMFYBURST_COMFYUI_LAYER_FILE": str(layer_file),
        "COMFYBURST_COMFYUI_LAYER_PATHS": str(root / "layer-paths.yaml"),
    }
    return _procs.spawn("comfyui", argv, env, root, cwd=comfy), f"http://127.0.0.1:{port}"


def _poll(what: str, deadline_s: float, check: Any, service: _procs.Service) -> Any:
    """`check()` until it answers something; fails with ComfyUI's log if it exits or is late."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            found = check()
        except requests.ConnectionError:
            found = None
        if found is not None:
            return found
        text = service.log_tail(60)
        assert service.alive(), f"ComfyUI exited ({what}):\n{text}"
        assert time.monotonic() < deadline, f"{what}: nothing after {deadline_s} s:\n{text}"
        time.sleep(0.5)


def test_a_built_layer_runs_its_node_in_a_real_comfyui(
    bucket: GcsBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comfy, python = _comfyui()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # only the wheel made here
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "cbenvdep", "1.0", "FACTOR = 2\n")
    before = _venv_state(python)
    served, work = tmp_path / "served", tmp_path / "work"
    with git_http_server(served) as hostport:
        pack = serve_pack(
            served, hostport, work, "layer-pack", init_text=double_and_show_pack(DOUBLE, SHOW)
        )
        builder = LayerBuilder(base_python=python, pip_args=pip_args(wheels), comfyui_dir=comfy)
        runner = EnvBuildRunner(bucket, BUCKET, tmp_path / "build-vm", builder, (hostport,))
        job = build_job("env-" + "1" * 64, [pack])
        started = time.monotonic()
        result = runner.run(job)
        build_s = time.monotonic() - started
    assert result.status is DoneStatus.SUCCEEDED, result.error
    built = result.environment_built
    assert built is not None and built.node_types == [DOUBLE, SHOW]
    assert not (tmp_path / "build-vm" / "builds").exists() or not any(
        (tmp_path / "build-vm" / "builds").iterdir()
    ), "the build folder stayed"

    # Another VM: the layer from the bucket, unpacked into its cache; the worker's layer file.
    env_id = job.environment_build.environment_id  # type: ignore[union-attr]
    cache = LayerCache(tmp_path / "run-vm" / "cache", bucket, BUCKET, max_bytes=2**34)
    started = time.monotonic()
    layer = cache.ensure(env_id)
    unpack_s = time.monotonic() - started
    assert layer.downloaded and set(layer.node_types) == {DOUBLE, SHOW}
    assert layer.site_packages is not None
    assert (layer.site_packages / "cbenvdep" / "__init__.py").is_file()
    layer_file = tmp_path / "run-vm" / "run" / "comfyui-layer.json"
    write_layer_file(layer_file, layer)

    service, url = _start_comfyui(comfy, python, layer_file, tmp_path / "comfyui")
    try:

        def object_info() -> Any:
            answer = requests.get(f"{url}/object_info", timeout=30)
            return answer.json() if answer.status_code == 200 else None

        info = _poll("/object_info", START_TIMEOUT_S, object_info, service)
        probed = json.loads(built.object_info_json)
        for name in (DOUBLE, SHOW):
            assert name in info, f"{name} is not in the real ComfyUI's /object_info"
            for key in ("input", "output", "output_node", "category"):
                # What pre-flight checks jobs against is what the real ComfyUI serves.
                assert info[name][key] == probed[name][key], (name, key)
        prompt = {
            "1": {"class_type": DOUBLE, "inputs": {"value": 21}},
            "2": {"class_type": SHOW, "inputs": {"value": ["1", 0]}},
        }
        queued = requests.post(f"{url}/prompt", json={"prompt": prompt}, timeout=30)
        assert queued.status_code == 200, queued.text
        prompt_id = queued.json()["prompt_id"]

        def ended() -> Any:
            entry = requests.get(f"{url}/history/{prompt_id}", timeout=30).json()
            status = (entry.get(prompt_id) or {}).get("status") or {}
            done = status.get("completed") or status.get("status_str") == "error"
            return entry[prompt_id] if done else None

        entry = _poll("the prompt", PROMPT_TIMEOUT_S, ended, service)
        assert entry["status"]["status_str"] == "success", entry["status"]
        # 21 doubled by the requirement's FACTOR: the layer's site-packages were imported.
        assert entry["outputs"]["2"]["text"] == ["42"], entry["outputs"]
        text = service.log_path.read_text(errors="replace")
        assert str(layer.custom_nodes) in text, "ComfyUI did not name the layer's custom_nodes"
    finally:
        _procs.stop_services([service], grace_s=30)
    after = _venv_state(python)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the base venv changed: {changed[:10]}"
    print(f"build {build_s:.1f} s, download+unpack {unpack_s:.2f} s")
