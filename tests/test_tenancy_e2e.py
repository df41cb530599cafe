"""Two callers, one VM, end to end on the local cloud: the API with two API keys, one pool VM
running the worker and the ComfyUI stand-in, a local model server. Caller B tries every way
this project knows to reach caller A's inputs, outputs and models; none works, and A's model
bytes are the same after B's jobs."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyburst.client import ApiClient, ApiError, ClientSettings
from localcloud.scenarios.harness import cloud_config, disk_root, running_cloud
from tests._e2e_support import REPO_ROOT, invert_workflow
from tests._model_server import ModelServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

KEYS = {"ana": "tenancy-key-ana", "bo": "tenancy-key-bo"}
SHAPES = REPO_ROOT / "examples" / "workflows" / "shapes.png"
VM_NAME = "comfyburst-gpu-0"
MiB = 1024 * 1024


class Tenancy:
    def __init__(self, env: dict[str, str], server: ModelServer, state_dir: Path) -> None:
        self.env, self.server = env, server
        self.disk = disk_root(state_dir) / VM_NAME
        self.clients = {
            who: ApiClient(
                ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="api_key", api_key=key)
            )
            for who, key in KEYS.items()
        }

    def run(self, who: str, request: dict[str, Any]) -> dict[str, Any] | ApiError:
        """Submit and wait; a refusal comes back as the ApiError."""
        client = self.clients[who]
        try:
            job = client.submit({"options": {"timeout_s": 240}, **request})
        except ApiError as exc:
            assert 400 <= exc.status < 500, exc.body
            return exc
        return client.wait(job["job_id"], poll_s=0.3, timeout_s=280)


@pytest.fixture(scope="module")
def tenancy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenancy]:
    """Its own cloud: api_key auth with two tenants' keys and its model server as an allowed
    host (both read when the functions and workers start)."""
    src = tmp_path_factory.mktemp("models")
    files = {
        "/a": os.urandom(300_000),
        "/b": os.urandom(300_000),
        "/gz": gzip.compress(bytes(32 * MiB), compresslevel=9),
        "/big": os.urandom(2 * MiB),
    }
    paths = {}
    for url_path, data in files.items():
        paths[url_path] = src / url_path.strip("/")
        paths[url_path].write_bytes(data)
    with ModelServer(paths) as server:
        server.encoded.add("/gz")
        server.unsized.add("/big")
        hashes = ",".join(f"{w}={hashlib.sha256(k.encode()).hexdigest()}" for w, k in KEYS.items())
        settings_env = {
            "COMFYBURST_AUTH_MODE": "api_key",
            "COMFYBURST_API_KEY_HASHES": hashes,
            "COMFYBURST_HTTP_MODEL_HOSTS": server.hostport,
        }
        state_dir = tmp_path_factory.mktemp("tenancy-cloud")
        config = cloud_config(state_dir, pool_size=1, settings_env=settings_env)
        with running_cloud(config) as cloud:
            yield Tenancy(dict(cloud.env), server, state_dir)


@pytest.fixture
def localcloud_env(tenancy: Tenancy) -> dict[str, str]:
    """This module's cloud (conftest's autouse wipe empties it before the test)."""
    return tenancy.env


def _load_invert(image: str, prefix: str) -> dict[str, Any]:
    workflow = invert_workflow()
    workflow["1"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    workflow["2"]["inputs"]["image"] = ["1", 0]
    workflow["3"]["inputs"]["filename_prefix"] = prefix
    return workflow


def _model(url: str, filename: str = "shared.safetensors", **kw: Any) -> dict[str, Any]:
    return {"kind": "checkpoints", "filename": filename, "url": url, **kw}


def _got_nothing(result: dict[str, Any] | ApiError) -> bool:
    """Refused at submit, or ended without outputs."""
    return isinstance(result, ApiError) or (
        result["state"] != "succeeded" and not result.get("outputs")
    )


def test_caller_b_gets_none_of_a_s_files_and_a_s_models_stay_a_s(tenancy: Tenancy) -> None:
    server = tenancy.server
    a_sha = hashlib.sha256(server.files["/a"].read_bytes()).hexdigest()
    photo = {"name": "shapes.png", "data_b64": base64.b64encode(SHAPES.read_bytes()).decode()}
    a_request = {
        "workflow": _load_invert("shapes.png", "ana/out"),
        "inputs": [photo],
        "models": [_model(server.url("/a"), sha256=a_sha)],
    }
    first = tenancy.run("ana", a_request)
    assert not isinstance(first, ApiError) and first["state"] == "succeeded", first
    a_job, a_output = first["job_id"], first["outputs"][0]["name"]

    # B reads A's job, and names A's input and output as ComfyUI would resolve them.
    with pytest.raises(ApiError) as read:
        tenancy.clients["bo"].get(a_job)
    assert read.value.status == 404
    for name in (
        f"comfyburst/{a_job}/shapes.png",
        f"{a_output} [output]",
        f"{a_output.rsplit('/', 1)[-1]} [output]",
        f"../input/comfyburst/{a_job}/shapes.png",
        "shapes.png [input]",
    ):
        stolen = tenancy.run("bo", {"workflow": _load_invert(name, "bo/steal")})
        assert _got_nothing(stolen), (name, stolen)

    # B brings a model of A's name with other bytes, guesses A's by its hash, leaves a
    # marker-shaped file, and sends a gzip bomb and an oversized answer.
    b_runs = {
        "same name": tenancy.run(
            "bo", {"workflow": invert_workflow(), "models": [_model(server.url("/b"))]}
        ),
        "hash only": tenancy.run(
            "bo",
            {"workflow": invert_workflow(), "models": [_model(server.url("/x"), sha256=a_sha)]},
        ),
        "marker name": tenancy.run(
            "bo",
            {
                "workflow": invert_workflow(),
                "models": [_model(server.url("/b"), filename="shared.safetensors.part.src")],
            },
        ),
        "gzip": tenancy.run(
            "bo",
            {
                "workflow": invert_workflow(),
                "models": [
                    _model(
                        server.url("/gz"),
                        filename="gz.safetensors",
                        size_bytes=server.files["/gz"].stat().st_size,
                    )
                ],
            },
        ),
        "oversize": tenancy.run(
            "bo",
            {
                "workflow": invert_workflow(),
                "models": [_model(server.url("/big"), filename="big.safetensors", size_bytes=MiB)],
            },
        ),
    }
    for case in ("same name", "marker name", "gzip"):
        result = b_runs[case]
        assert not isinstance(result, ApiError) and result["state"] == "succeeded", (case, result)
    for case in ("hash only", "oversize"):
        result = b_runs[case]
        assert not isinstance(result, ApiError) and result["state"] == "failed", (case, result)
        assert result["error"]["type"] == "model_fetch", (case, result)

    # A runs again on the same VM: a cache hit on A's own bytes.
    again = tenancy.run("ana", a_request)
    assert not isinstance(again, ApiError) and again["state"] == "succeeded", again
    assert again["worker_timings"]["model_cache_hits"] == 1
    store = tenancy.disk / "model-store" / "sha256"
    assert (store / a_sha).read_bytes() == server.files["/a"].read_bytes()
    for blob in store.iterdir():  # every stored file is what its name says
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    wire = server.files["/gz"].read_bytes()
    assert (store / hashlib.sha256(wire).hexdigest()).stat().st_size == len(wire)  # not inflated
    assert not list((tenancy.disk / "model-store" / "partial").iterdir())
    # Every job has ended: ComfyUI's folders and the model view hold nothing.
    for folder in ("input", "output", "temp"):
        assert not list((tenancy.disk / "comfyui" / folder).rglob("*")), folder
    assert not [p for p in (tenancy.disk / "job-models").rglob("*") if not p.is_dir()]
