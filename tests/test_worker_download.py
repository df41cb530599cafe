"""The model downloader and cache: hits without re-hashing, resume, ranged parts, refusals."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from comfyburst.adapters.clock import SystemClock
from comfyburst.schema import VmRef
from comfyburst_worker import _download, _parts
from comfyburst_worker.__main__ import build_services
from comfyburst_worker._download import DownloadError, HttpDownloader
from comfyburst_worker._hosts import HostPolicy
from tests._model_server import ModelServer
from tests._worker_support import local_config, local_settings
from tests.fakes import InMemoryBlobStore, InMemoryJobStore


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


# --- where a download may go -------------------------------------------------------------------


def test_redirect_hosts_only_for_hops_over_https_and_never_get_the_token():
    policy = HostPolicy(
        https_hosts=("huggingface.co",),
        redirect_hosts=("hf.co",),
        auth_headers={"huggingface.co": "Bearer t"},
    )
    policy.check("https://huggingface.co/r/resolve/main/m.safetensors")
    policy.check("https://cas-bridge.xethub.hf.co/xet/abc?sig=1", redirect=True)
    with pytest.raises(ValueError, match="not allowed"):
        policy.check("https://cas-bridge.xethub.hf.co/xet/abc")  # as the submitted URL
    with pytest.raises(ValueError, match="not allowed"):
        policy.check("http://cdn-lfs.hf.co/x", redirect=True)
    assert policy.headers_for("https://cdn-lfs.hf.co/x") == {}


def test_build_services_passes_redirect_hosts_to_the_policy(tmp_path):
    config = local_config(
        model_hosts=["civitai.com"], model_redirect_hosts=["r2.cloudflarestorage.com"]
    )
    settings = local_settings("http://127.0.0.1:9", tmp_path / "models")
    services = build_services(
        settings,
        config,
        VmRef(name="vm", zone="z"),
        InMemoryJobStore(),
        InMemoryBlobStore(),
        SystemClock(),
    )
    policy = services.cache.downloader.policy
    policy.check("https://bucket.acct.r2.cloudflarestorage.com/m?X-Amz-Signature=s", redirect=True)
    with pytest.raises(ValueError):
        policy.check("https://bucket.acct.r2.cloudflarestorage.com/m")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/m.bin",
        "https://[::1]/m.bin",
        "https://169.254.169.254/computeMetadata/v1/",
        "https://localhost/m.bin",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://db.internal/m.bin",
        "http://127.0.0.1:8081/m.bin",  # not the listed port
        "http://localhost:8080/m.bin",  # not the listed spelling
    ],
)
def test_ip_literals_and_internal_names_are_refused_even_if_listed(url):
    policy = HostPolicy(
        https_hosts=("127.0.0.1", "::1", "169.254.169.254", "localhost", "internal"),
        http_hostports=("127.0.0.1:8080",),
    )
    policy.check("http://127.0.0.1:8080/m.bin")  # the exact local test server stays allowed
    with pytest.raises(ValueError, match="not allowed"):
        policy.check(url)


# --- ranged download: no write after the file is closed ------------------------------------------


def test_failed_part_joins_the_other_parts_before_closing_the_file(
    tmp_path, blob_file, monkeypatch
):
    src, _ = blob_file
    aborted, second_reading = threading.Event(), threading.Event()
    part_threads: list[threading.Thread] = []
    alive_at_close: list[bool] = []
    original_abort = _parts.PartWindow.abort

    def abort(window: _parts.PartWindow) -> None:
        original_abort(window)
        aborted.set()

    class _Os:
        """`os` for the download module: records whether a part thread outlives the close."""

        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        def close(self, fd: int) -> None:
            alive_at_close.append(any(t.is_alive() for t in part_threads))
            os.close(fd)

    class _SlowSecondPart(HttpDownloader):
        def _read_range(self, conn, url, headers, lo, view, *args):  # type: ignore[override]
            part_threads.append(threading.current_thread())
            if lo == 0:
                assert second_reading.wait(timeout=10)
                raise DownloadError("part 0 failed")
            second_reading.set()
            # Still reading when the download is given up; it returns only then.
            assert aborted.wait(timeout=10)
            return conn

    monkeypatch.setattr(_parts.PartWindow, "abort", abort)
    monkeypatch.setattr(_download, "os", _Os())
    with ModelServer({"/m.bin": src}) as server:
        policy = HostPolicy(http_hostports=(server.hostport,))
        downloader = _SlowSecondPart(
            policy, parallelism=2, chunk_bytes=256 * 1024, min_parallel_bytes=1, retries=0
        )
        with pytest.raises(DownloadError, match="part 0 failed"):
            downloader.fetch(server.url("/m.bin"), tmp_path / "out")
    assert alive_at_close == [False]
    assert len(part_threads) >= 2 and not any(t.is_alive() for t in part_threads)
