"""The model downloader and cache: hits without re-hashing, resume, ranged parts, refusals."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from comfyburst.schema import ModelKind, ModelSpec
from comfyburst_worker._download import DownloadError, HttpDownloader
from comfyburst_worker._hosts import HostPolicy
from comfyburst_worker.errors import ModelFetchError
from comfyburst_worker.model_cache import SIDECAR_SUFFIX, ModelCache
from tests._model_server import ModelServer
from tests.fakes import InMemoryBlobStore


@pytest.fixture
def blob_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    return path, data


def _downloader(server: ModelServer, **kw: object) -> HttpDownloader:
    policy = HostPolicy(http_hostports=(server.hostport,))
    params: dict[str, object] = {"chunk_bytes": 256 * 1024, "min_parallel_bytes": 1, **kw}
    return HttpDownloader(policy, sleep=lambda _s: None, **params)  # type: ignore[arg-type]


def test_ranged_download_uses_parts_and_hashes_in_order(tmp_path, blob_file):
    src, data = blob_file
    with ModelServer({"/m.bin": src}) as server:
        fetched = _downloader(server, parallelism=4).fetch(server.url("/m.bin"), tmp_path / "out")
        ranges = [r for _, r, _ in server.requests if r]
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "out").read_bytes() == data
    assert len(ranges) == -(-len(data) // (256 * 1024))
    assert not (tmp_path / "out.ranged").exists()


def test_single_stream_when_server_has_no_ranges(tmp_path, blob_file):
    src, data = blob_file
    with ModelServer({"/m.bin": src}, ranges=False) as server:
        fetched = _downloader(server).fetch(server.url("/m.bin"), tmp_path / "out")
        assert [r for _, r, _ in server.requests] == [None]
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert fetched.bytes_downloaded == len(data)


def test_resume_sends_range_from_partial_and_hashes_whole_file(tmp_path, blob_file):
    src, data = blob_file
    partial = tmp_path / "out"
    partial.write_bytes(data[:1_000_000])
    with ModelServer({"/m.bin": src}) as server:
        fetched = _downloader(server, parallelism=1).fetch(server.url("/m.bin"), partial)
        assert server.requests[0][1] == "bytes=1000000-"
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert fetched.bytes_downloaded == len(data) - 1_000_000
    assert partial.read_bytes() == data


def test_redirect_to_disallowed_host_is_refused(tmp_path, blob_file):
    src, _ = blob_file
    with ModelServer({"/m.bin": src}) as server:
        server.redirects["/go"] = "https://evil.example.com/m.bin"
        with pytest.raises(DownloadError, match=r"refused evil\.example\.com"):
            _downloader(server).fetch(server.url("/go"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_redirect_within_allowed_hosts_is_followed(tmp_path, blob_file):
    src, data = blob_file
    with ModelServer({"/m.bin": src}) as server:
        server.redirects["/go"] = "/m.bin"
        fetched = _downloader(server).fetch(server.url("/go"), tmp_path / "out")
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()


def test_token_goes_only_to_its_own_host():
    policy = HostPolicy(https_hosts=("civitai.com",), auth_headers={"civitai.com": "Bearer t"})
    assert policy.headers_for("https://civitai.com/api/download/1") == {"Authorization": "Bearer t"}
    assert policy.headers_for("https://cdn.example.net/file") == {}
    assert policy.headers_for("https://notcivitai.com/x") == {}
    assert policy.headers_for("http://civitai.com/x") == {}


def _cache(tmp_path: Path, server: ModelServer, blobs=None, bucket=None) -> ModelCache:
    return ModelCache(tmp_path / "models", _downloader(server), blobs, bucket, [])


def test_sha_mismatch_fails_and_leaves_nothing(tmp_path, blob_file):
    src, _ = blob_file
    with ModelServer({"/m.bin": src}) as server:
        spec = ModelSpec(
            kind=ModelKind.LORAS,
            filename="x.safetensors",
            url=server.url("/m.bin"),
            sha256="0" * 64,
        )
        cache = _cache(tmp_path, server)
        with pytest.raises(ModelFetchError, match="sha256 mismatch"):
            cache.ensure(spec)
    assert not cache.path_of(spec).exists()
    assert not list((tmp_path / "models" / "loras").iterdir())


def test_cache_hit_needs_no_request_and_mirror_serves_the_next_vm(tmp_path, blob_file):
    src, data = blob_file
    digest = hashlib.sha256(data).hexdigest()
    blobs = InMemoryBlobStore()
    with ModelServer({"/m.bin": src}) as server:
        spec = ModelSpec(
            kind=ModelKind.CHECKPOINTS,
            filename="sub/m.safetensors",
            url=server.url("/m.bin"),
            sha256=digest,
            size_bytes=len(data),
        )
        first = _cache(tmp_path / "vm1", server, blobs, "models-bkt")
        assert first.ensure(spec).source == "url"
        first.wait_for_mirrors()
        served = len(server.requests)
        assert first.ensure(spec).cache_hit
        sidecar = first.path_of(spec).with_name("m.safetensors" + SIDECAR_SUFFIX)
        assert digest in sidecar.read_text()
        second = _cache(tmp_path / "vm2", server, blobs, "models-bkt")
        result = second.ensure(spec)
        assert len(server.requests) == served  # neither the hit nor the mirror touched the URL
    assert result.source == "mirror"
    assert blobs.read("models-bkt", "models/checkpoints/sub/m.safetensors") == data
    assert second.path_of(spec).read_bytes() == data
