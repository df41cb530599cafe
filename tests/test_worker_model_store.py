"""The model store by construction: content-addressed files, URL-keyed records, per-job views,
bounded downloads that take raw bytes and stop on cancel. Local model server, no fakes of HTTP."""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from pathlib import Path

import pytest

from comfyburst.schema import ModelKind, ModelSpec
from comfyburst_worker._download import (
    Cancel,
    DownloadCancelled,
    HttpDownloader,
    TooLarge,
)
from comfyburst_worker._hosts import HostPolicy
from comfyburst_worker.errors import ModelFetchError
from comfyburst_worker.model_cache import ModelCache, url_key
from comfyburst_worker.model_view import JobModelView, changed_names
from tests._model_server import ModelServer
from tests.fakes import InMemoryBlobStore

MiB = 1024 * 1024


def _downloader(server: ModelServer, **kw: object) -> HttpDownloader:
    policy = HostPolicy(http_hostports=(server.hostport,))
    params: dict[str, object] = {"chunk_bytes": 256 * 1024, "min_parallel_bytes": 1, **kw}
    return HttpDownloader(policy, sleep=lambda _s: None, **params)  # type: ignore[arg-type]


def _files(tmp_path: Path, **named: bytes) -> dict[str, Path]:
    paths = {}
    for name, data in named.items():
        path = tmp_path / f"src-{name}.bin"
        path.write_bytes(data)
        paths[f"/{name}"] = path
    return paths


def _spec(url: str, filename: str = "m.safetensors", **kw: object) -> ModelSpec:
    return ModelSpec(kind=ModelKind.CHECKPOINTS, filename=filename, url=url, **kw)  # type: ignore[arg-type]


def _store_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "sha256").iterdir()}


# --- bounded downloads ---------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_refused_before_the_body(tmp_path):
    with ModelServer(_files(tmp_path, big=os.urandom(3 * MiB))) as server:
        tmp = tmp_path / "partial"
        with pytest.raises(TooLarge, match="declares 3145728 bytes"):
            _downloader(server).fetch(server.url("/big"), tmp, max_bytes=MiB)
        assert len(server.requests) == 1  # no part of the body was asked for
    assert not tmp.exists()


def test_an_answer_without_length_is_cut_at_the_limit_and_removed(tmp_path):
    with ModelServer(_files(tmp_path, big=os.urandom(3 * MiB))) as server:
        server.unsized.add("/big")
        tmp = tmp_path / "partial"
        with pytest.raises(TooLarge, match=f"more than {MiB} bytes"):
            _downloader(server, parallelism=1).fetch(server.url("/big"), tmp, max_bytes=MiB)
    assert not tmp.exists()


def test_a_gzip_answer_is_stored_as_sent_and_hashed_as_sent(tmp_path):
    inflated = bytes(64 * MiB)
    wire = gzip.compress(inflated, compresslevel=9)
    assert len(wire) < 100_000
    with ModelServer(_files(tmp_path, gz=wire), ranges=False) as server:
        server.encoded.add("/gz")
        tmp = tmp_path / "partial"
        fetched = _downloader(server).fetch(server.url("/gz"), tmp, max_bytes=len(wire))
    assert tmp.stat().st_size == len(wire)
    assert fetched.sha256 == hashlib.sha256(wire).hexdigest()


@pytest.mark.parametrize("ranged", [False, True], ids=["stream", "ranged"])
def test_cancel_stops_a_stalled_download_while_the_server_still_stalls(tmp_path, ranged):
    with ModelServer(_files(tmp_path, slow=os.urandom(2 * MiB)), ranges=ranged) as server:
        server.stalled.add("/slow")
        cancel = Cancel()
        tmp = tmp_path / "partial"
        timer = threading.Timer(0.3, cancel.set)
        timer.start()
        try:
            with pytest.raises(DownloadCancelled):
                _downloader(server, parallelism=2).fetch(server.url("/slow"), tmp, cancel=cancel)
            # It returned on the cancel, not because the server went on or hung up.
            assert not server.stall_ended.is_set()
        finally:
            server.release.set()
            timer.cancel()
    assert not tmp.exists() and not tmp.with_name("partial.ranged").exists()


def test_the_cache_caps_a_download_at_the_declared_size(tmp_path):
    data = os.urandom(2 * MiB)
    with ModelServer(_files(tmp_path, m=data)) as server:
        server.unsized.add("/m")
        cache = ModelCache(tmp_path / "store", _downloader(server, parallelism=1), None, None, [])
        with pytest.raises(ModelFetchError, match=f"more than {MiB} bytes"):
            cache.ensure(_spec(server.url("/m"), size_bytes=MiB))
    for folder in ("sha256", "urls", "partial"):
        assert not list((tmp_path / "store" / folder).iterdir())


# --- keys: the exact URL, never a name a job chose ------------------------------------------------


def test_same_name_other_bytes_each_job_gets_its_own_and_the_first_is_unchanged(tmp_path):
    a_bytes, b_bytes = os.urandom(300_000), os.urandom(300_000)
    with ModelServer(_files(tmp_path, a=a_bytes, b=b_bytes)) as server:
        cache = ModelCache(tmp_path / "store", _downloader(server), None, None, [])
        a = cache.ensure(_spec(server.url("/a")))
        b = cache.ensure(_spec(server.url("/b")))  # same kind/filename, another URL
        again = cache.ensure(_spec(server.url("/a")))
    assert a.blob != b.blob and again.cache_hit and again.blob == a.blob
    assert a.blob.read_bytes() == a_bytes and b.blob.read_bytes() == b_bytes
    assert not os.access(a.blob, os.W_OK) or os.geteuid() == 0
    assert a.blob.stat().st_mode & 0o222 == 0  # read-only once in place


def test_the_query_is_part_of_the_key_and_no_url_or_token_reaches_the_disk(tmp_path):
    fp16, fp32 = os.urandom(50_000), os.urandom(60_000)
    with ModelServer(_files(tmp_path, v=fp16, w=fp32)) as server:
        server.redirects["/dl?type=fp16&token=SECRET_A"] = "/v"
        server.redirects["/dl?type=fp32&token=SECRET_A"] = "/w"
        server.redirects["/dl?type=fp16&token=SECRET_B"] = "/v"
        cache = ModelCache(tmp_path / "store", _downloader(server), None, None, [])
        first = cache.ensure(_spec(server.url("/dl?type=fp16&token=SECRET_A")))
        other_variant = cache.ensure(_spec(server.url("/dl?type=fp32&token=SECRET_A")))
        other_token = _spec(server.url("/dl?type=fp16&token=SECRET_B"))
        assert not cache.is_cached(other_token)  # A's token never unlocks a hit for B
        cache.ensure(other_token)
    assert first.blob.read_bytes() == fp16 and other_variant.blob.read_bytes() == fp32
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            text = path.name + (path.read_text() if path.parent.name == "urls" else "")
            assert "SECRET" not in text and "/dl" not in text


def test_a_declared_sha256_alone_does_not_reach_another_urls_file(tmp_path):
    private = os.urandom(100_000)
    digest = hashlib.sha256(private).hexdigest()
    with ModelServer(_files(tmp_path, a=private)) as server:
        cache = ModelCache(tmp_path / "store", _downloader(server), None, None, [])
        cache.ensure(_spec(server.url("/a"), sha256=digest))
        guess = _spec(server.url("/nothing-here"), sha256=digest)
        assert not cache.is_cached(guess)
        with pytest.raises(ModelFetchError, match="HTTP 404"):
            cache.ensure(guess)


@pytest.mark.parametrize(
    "filename",
    ["x.safetensors.part", "x.safetensors.part.src", "x.comfyburst.json", "x.ranged"],
)
def test_marker_shaped_names_touch_nothing_of_another_download(tmp_path, filename):
    """A job names its model like a cache marker and leaves a partial: the victim's download of
    `x.safetensors` (no sha256) neither resumes from it nor is recorded with its bytes."""
    victim_bytes, attacker_bytes = os.urandom(200_000), os.urandom(150_000)
    with ModelServer(_files(tmp_path, v=victim_bytes, e=attacker_bytes)) as server:
        cache = ModelCache(tmp_path / "store", _downloader(server), None, None, [])
        evil = _spec(server.url("/e"), filename=filename)
        cache.ensure(evil)
        victim = cache.ensure(_spec(server.url("/v"), filename="x.safetensors"))
    assert victim.blob.read_bytes() == victim_bytes
    assert not list((tmp_path / "store" / "partial").iterdir())


def test_a_failed_download_leaves_no_partial_no_file_no_record(tmp_path):
    with ModelServer(_files(tmp_path, m=os.urandom(400_000))) as server:
        cache = ModelCache(tmp_path / "store", _downloader(server), None, None, [])
        with pytest.raises(ModelFetchError, match="sha256 mismatch"):
            cache.ensure(_spec(server.url("/m"), sha256="0" * 64))
    for folder in ("sha256", "urls", "partial"):
        assert not list((tmp_path / "store" / folder).iterdir())


def test_clear_partials_drops_what_a_crash_left(tmp_path):
    cache = ModelCache(tmp_path / "store", HttpDownloader(HostPolicy()), None, None, [])
    (tmp_path / "store" / "partial" / url_key("https://h.example/m")).write_bytes(b"half")
    cache.clear_partials()
    assert not list((tmp_path / "store" / "partial").iterdir())


# --- the models bucket mirror ---------------------------------------------------------------------


def test_mirror_holds_content_under_its_hash_and_serves_the_next_vm(tmp_path):
    data = os.urandom(500_000)
    digest = hashlib.sha256(data).hexdigest()
    blobs = InMemoryBlobStore()
    with ModelServer(_files(tmp_path, m=data)) as server:
        server.files["/m?v=1"] = server.files["/m"]
        spec = _spec(server.url("/m?v=1"), sha256=digest, size_bytes=len(data))
        first = ModelCache(tmp_path / "vm1", _downloader(server), blobs, "models-bkt", [])
        assert first.ensure(spec).source == "url"
        first.wait_for_mirrors()
        served = len(server.requests)
        second = ModelCache(tmp_path / "vm2", _downloader(server), blobs, "models-bkt", [])
        result = second.ensure(spec)
        assert len(server.requests) == served
    assert result.source == "mirror" and result.blob.read_bytes() == data
    assert blobs.read("models-bkt", f"models/sha256/{digest}") == data
    assert sorted(blobs.list("models-bkt", "models/")) == sorted(
        [f"models/sha256/{digest}", f"models/urls/{url_key(spec.url)}.json"]
    )


def test_a_mirror_copy_that_does_not_hash_to_its_name_is_ignored(tmp_path):
    data = os.urandom(100_000)
    digest = hashlib.sha256(data).hexdigest()
    blobs = InMemoryBlobStore()
    with ModelServer(_files(tmp_path, m=data)) as server:
        spec = _spec(server.url("/m"))
        record = f'{{"sha256": "{digest}", "size": {len(data)}}}'.encode()
        blobs.write("models-bkt", f"models/urls/{url_key(spec.url)}.json", record)
        blobs.write("models-bkt", f"models/sha256/{digest}", os.urandom(len(data)))
        cache = ModelCache(tmp_path / "vm", _downloader(server), blobs, "models-bkt", [])
        result = cache.ensure(spec)
    assert result.source == "url" and result.blob.read_bytes() == data


# --- the per-job view ---------------------------------------------------------------------


def test_the_view_shows_one_jobs_names_and_never_writes_the_prebaked_folder(tmp_path):
    prebaked = tmp_path / "comfyui-models" / "checkpoints" / "m.safetensors"
    prebaked.parent.mkdir(parents=True)
    prebaked.write_bytes(b"pre-baked")
    blob_a, blob_b = tmp_path / ("a" * 64), tmp_path / ("b" * 64)
    blob_a.write_bytes(b"job A")
    blob_b.write_bytes(b"job B")
    view = JobModelView(tmp_path / "view")
    assert view.show({"checkpoints/m.safetensors": blob_a}) == {"checkpoints/m.safetensors"}
    assert (tmp_path / "view" / "checkpoints" / "m.safetensors").read_bytes() == b"job A"
    view.clear()
    assert view.show({"loras/sub/l.safetensors": blob_b}) == {
        "checkpoints/m.safetensors",  # back to the pre-baked file for this job
        "loras/sub/l.safetensors",
    }
    assert not (tmp_path / "view" / "checkpoints" / "m.safetensors").exists()
    assert prebaked.read_bytes() == b"pre-baked"
    view.clear()
    assert sorted(p.name for p in (tmp_path / "view").iterdir()) == sorted(
        k.value for k in ModelKind
    )
    assert not any(p.is_file() or p.is_symlink() for p in (tmp_path / "view").rglob("*"))


def test_changed_names_only_when_a_name_leads_elsewhere():
    assert changed_names({"c/m": "a"}, {"c/m": "a"}) == set()
    assert changed_names({"c/m": "a"}, {"c/m": "b"}) == {"c/m"}
    assert changed_names({}, {"c/m": "a"}) == {"c/m"}
    assert changed_names({"c/m": "a"}, {}) == {"c/m"}


def test_the_view_refuses_a_name_that_leaves_it(tmp_path):
    blob = tmp_path / ("c" * 64)
    blob.write_bytes(b"x")
    view = JobModelView(tmp_path / "view")
    with pytest.raises(ValueError, match="leaves the view"):
        view.show({"checkpoints/../../escaped": blob})
    assert not (tmp_path / "escaped").exists()
