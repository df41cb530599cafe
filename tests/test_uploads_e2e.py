"""Local models end to end on the local cloud: the node's flow uploads a local checkpoint the
GPU side lacks into the models bucket, a job naming it runs on a pool VM (worker + ComfyUI
stand-in) and the VM's model store holds the very same bytes; a second run sends nothing; a
client that lies about the hash gets its job refused by the worker.

The stand-in runs no loader nodes, so the node finds what to bring from the pre-flight of a
checkpoint workflow, and the job that runs is the invert workflow bringing that upload."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_node.local_models import HashCache, bring_local_models
from comfyburst.client import ApiClient, ApiError, ClientSettings
from localcloud.scenarios.harness import cloud_config, disk_root, running_cloud
from tests._api_support import ckpt_body
from tests._e2e_support import invert_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

KEYS = {"ana": "uploads-key-ana", "bo": "uploads-key-bo"}
VM_NAME = "comfyburst-gpu-0"


class Env:
    def __init__(self, env: dict[str, str], state_dir: Path) -> None:
        self.env = env
        self.store = disk_root(state_dir) / VM_NAME / "model-store" / "sha256"
        self.clients = {
            who: ApiClient(
                ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="api_key", api_key=key)
            )
            for who, key in KEYS.items()
        }

    def run(self, who: str, models: list[dict[str, Any]]) -> dict[str, Any]:
        client = self.clients[who]
        job = client.submit(
            {"workflow": invert_workflow(), "models": models, "options": {"timeout_s": 240}}
        )
        return client.wait(job["job_id"], poll_s=0.3, timeout_s=280)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Its own cloud: api_key auth, and model uploads open to one key only (settings read
    when the functions start)."""
    hashes = ",".join(f"{w}={hashlib.sha256(k.encode()).hexdigest()}" for w, k in KEYS.items())
    settings_env = {
        "COMFYBURST_AUTH_MODE": "api_key",
        "COMFYBURST_API_KEY_HASHES": hashes,
        "COMFYBURST_MODEL_UPLOAD_PRINCIPALS": "key:ana",
    }
    state_dir = tmp_path_factory.mktemp("uploads-cloud")
    config = cloud_config(state_dir, pool_size=1, settings_env=settings_env)
    with running_cloud(config) as running:
        yield Env(dict(running.env), state_dir)


@pytest.fixture
def localcloud_env(cloud: Env) -> dict[str, str]:
    """This module's cloud (conftest's autouse wipe empties it before the test)."""
    return cloud.env


def test_a_local_checkpoint_runs_on_the_gpu_side_with_the_same_bytes(
    cloud: Env, tmp_path: Path
) -> None:
    local = tmp_path / "my.safetensors"
    data = os.urandom(700_000)
    local.write_bytes(data)
    request = ckpt_body()
    request["models"] = []

    def find(value: str, _input: str) -> tuple[str, Path] | None:
        return ("checkpoints", local) if value == "my.safetensors" else None

    hashes = HashCache(tmp_path / "hashes.json")
    client = cloud.clients["ana"]
    brought, sent = bring_local_models(client, request, find_local=find, hashes=hashes)
    assert sent == ["my.safetensors"]
    job = cloud.run("ana", brought["models"])
    assert job["state"] == "succeeded", job
    sha256 = hashlib.sha256(data).hexdigest()
    assert (cloud.store / sha256).read_bytes() == data
    # Second run: found by its hash, nothing sent.
    again, sent_again = bring_local_models(client, request, find_local=find, hashes=hashes)
    assert sent_again == [] and again["models"] == brought["models"]
    # bo may not upload, nor run ana's upload.
    with pytest.raises(ApiError) as refused:
        cloud.clients["bo"].start_upload(sha256, len(data))
    assert refused.value.status == 403
    with pytest.raises(ApiError) as not_bos:
        cloud.run("bo", brought["models"])
    assert not_bos.value.status == 403


def test_a_wrong_hash_is_refused_by_the_worker(cloud: Env, tmp_path: Path) -> None:
    honest = os.urandom(400_000)
    claimed = hashlib.sha256(honest).hexdigest()
    client = cloud.clients["ana"]
    answer = client.start_upload(claimed, len(honest))
    lie = tmp_path / "lie.bin"
    lie.write_bytes(os.urandom(len(honest)))  # same size, other bytes
    client.send_file(answer["session_url"], str(lie), len(honest))
    model = {
        "kind": "checkpoints",
        "filename": "lie.safetensors",
        "url": answer["url"],
        "sha256": claimed,
        "size_bytes": len(honest),
    }
    job = cloud.run("ana", [model])
    assert job["state"] == "failed", job
    assert "sha256 mismatch" in (job.get("error") or {}).get("message", ""), job
    assert not (cloud.store / claimed).exists()
