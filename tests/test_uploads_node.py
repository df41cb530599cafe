"""The node's side of local models: which files it brings, the hash cache, and the whole flow
against the API of functions/main.py served over loopback HTTP on the emulators."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfy_node._vendor.comfyburst_core.client import ApiClient, ClientSettings
from comfy_node.local_models import (
    HashCache,
    bring_local_models,
    local_models_to_bring,
    without_bringable,
)
from tests._api_support import ckpt_body
from tests.test_api_emulator import settings, standin  # noqa: F401  (module fixtures)
from tests.test_uploads_api import KEYS, Cloud, cloud  # noqa: F401  (fixture)

VERDICT = {
    "node_errors": {
        "3": {
            "errors": [
                {
                    "type": "value_not_in_list",
                    "extra_info": {"input_name": "ckpt_name", "received_value": "mine.ckpt"},
                },
                {"type": "required_input_missing", "extra_info": {"input_name": "x"}},
            ]
        },
        "7": {
            "errors": [
                {
                    "type": "value_not_in_list",
                    "extra_info": {"input_name": "lora_name", "received_value": "elsewhere.pt"},
                }
            ]
        },
    }
}


def test_only_files_the_gpu_lacks_and_this_comfyui_has_are_brought(tmp_path: Path) -> None:
    local = {"mine.ckpt": ("checkpoints", tmp_path / "mine.ckpt")}
    wanted = local_models_to_bring({"models": []}, VERDICT, lambda v, _i: local.get(v))
    assert [(m.kind, m.filename) for m in wanted] == [("checkpoints", "mine.ckpt")]
    # A file the job already brings by URL is not uploaded.
    by_url = {"models": [{"filename": "mine.ckpt", "kind": "checkpoints", "url": "u"}]}
    assert local_models_to_bring(by_url, VERDICT, lambda v, _i: local.get(v)) == []


def test_the_hash_cache_hashes_a_file_version_once(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"one" * 100)
    cache_file = tmp_path / "hashes.json"
    first = HashCache(cache_file).digests(path)
    assert (first.sha256, first.size_bytes) == (hashlib.sha256(b"one" * 100).hexdigest(), 300)
    assert (
        first.md5_b64
        == base64.b64encode(hashlib.md5(b"one" * 100, usedforsecurity=False).digest()).decode()
    )
    stat = path.stat()
    # Same size and mtime: the cached hash stands, whatever the bytes (proof nothing is read).
    path.write_bytes(b"two" * 100)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert HashCache(cache_file).digests(path) == first
    # A new mtime is a new version: hashed again.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert HashCache(cache_file).digests(path).sha256 == hashlib.sha256(b"two" * 100).hexdigest()


@pytest.fixture
def api_url(cloud: Cloud) -> Iterator[str]:  # noqa: F811
    """The app of functions/main.py on 127.0.0.1, so the node's real client can reach it."""
    from werkzeug.serving import make_server

    app = cloud.client.application
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.mark.emulator
def test_the_node_uploads_once_and_names_the_upload(
    cloud: Cloud,  # noqa: F811
    api_url: str,
    tmp_path: Path,
) -> None:
    client = ApiClient(ClientSettings(api_url=api_url, auth="api_key", api_key=KEYS["ana"]))
    local = tmp_path / "models" / "checkpoints" / "my.safetensors"
    local.parent.mkdir(parents=True)
    data = os.urandom(300_000)
    local.write_bytes(data)
    request = ckpt_body()
    request["models"] = []  # the workflow names my.safetensors; only this ComfyUI has it

    def find(value: str, _input: str) -> tuple[str, Path] | None:
        return ("checkpoints", local) if value == "my.safetensors" else None

    progress: list[tuple[int, int]] = []
    hashes = HashCache(tmp_path / "hashes.json")
    brought, sent = bring_local_models(
        client,
        request,
        find_local=find,
        hashes=hashes,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert sent == ["my.safetensors"] and progress[-1] == (len(data), len(data))
    (model,) = brought["models"]
    assert model["sha256"] == hashlib.sha256(data).hexdigest()
    bucket, _, name = model["url"].removeprefix("gs://").partition("/")
    assert cloud.blobs.read(bucket, name) == data
    job = client.submit(brought)
    assert job["state"] in ("starting", "queued")
    # The second run: the hash check finds it, nothing is sent.
    again, sent_again = bring_local_models(client, request, find_local=find, hashes=hashes)
    assert sent_again == [] and again["models"] == brought["models"]
    # A changed file is uploaded again, under its new hash.
    local.write_bytes(os.urandom(300_000))
    changed, sent_changed = bring_local_models(client, request, find_local=find, hashes=hashes)
    assert sent_changed == ["my.safetensors"]
    assert changed["models"][0]["sha256"] != model["sha256"]


def test_queue_on_gpu_counts_a_local_model_as_brought_not_missing(tmp_path: Path) -> None:
    rejected = {"valid": False, "error": None, **VERDICT}
    local = {"mine.ckpt": ("checkpoints", tmp_path / "mine.ckpt")}
    # elsewhere.pt is on no local folder: still an error, still rejected.
    partly = without_bringable(rejected, lambda v, _i: local.get(v))
    assert partly["valid"] is False
    assert [e["type"] for e in partly["node_errors"]["3"]["errors"]] == ["required_input_missing"]
    assert "7" in partly["node_errors"]
    # Every error a local file: the graph can run once the files are brought.
    only_local = {"valid": False, "error": None, "node_errors": {"3": VERDICT["node_errors"]["3"]}}
    only_local["node_errors"]["3"] = {"errors": VERDICT["node_errors"]["3"]["errors"][:1]}
    assert without_bringable(only_local, lambda v, _i: local.get(v))["valid"] is True
    assert without_bringable(only_local, lambda v, _i: None) == only_local
