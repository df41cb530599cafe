"""Worker paths the end-to-end tests do not reach: gs:// model sources, output format
conversion, the deadline → timed_out path, where model-host tokens go (and that no log holds
them), and the metadata client's retries."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from datetime import timedelta
from typing import Any

import pytest
import requests
import urllib3
from PIL import Image
from requests.structures import CaseInsensitiveDict

from comfyburst.adapters.clock import SystemClock
from comfyburst.schema import (
    DeploymentConfig,
    DoneManifest,
    DoneStatus,
    ModelKind,
    ModelSpec,
    OutputFormat,
    VmRef,
)
from comfyburst_worker import metadata as metadata_mod
from comfyburst_worker._download import DownloadError, HttpDownloader
from comfyburst_worker._hosts import HostPolicy
from comfyburst_worker._secrets import load_auth_headers
from comfyburst_worker.errors import ModelFetchError, OutputError
from comfyburst_worker.job_runner import JobRunner
from comfyburst_worker.metadata import MetadataClient
from comfyburst_worker.model_cache import ModelCache
from comfyburst_worker.outputs import OutputCollector, convert
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
TOKEN = "hf_SECRET_token_value_42"


def _png(mode: str = "RGBA", colour: Any = (10, 200, 30, 128)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (6, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


# --- gs:// model sources ----------------------------------------------------------------------


class _NoHttp(HttpDownloader):
    def fetch(self, url, tmp):  # type: ignore[override]
        raise AssertionError(f"gs:// must not go over HTTP: {url}")


def _gs_cache(tmp_path, blobs, allowed: list[str]) -> ModelCache:
    return ModelCache(tmp_path / "models", _NoHttp(HostPolicy()), blobs, "mirror-bkt", allowed)


def _gs_spec(url: str, data: bytes, **kw: Any) -> ModelSpec:
    values: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), **kw}
    return ModelSpec(kind=ModelKind.LORAS, filename="style.safetensors", url=url, **values)


def test_gs_source_from_an_allowed_bucket_is_verified_installed_and_mirrored(tmp_path):
    data = os.urandom(100_000)
    blobs = InMemoryBlobStore()
    blobs.write("team-models", "loras/style.safetensors", data)
    cache = _gs_cache(tmp_path, blobs, ["team-models"])
    spec = _gs_spec("gs://team-models/loras/style.safetensors", data, size_bytes=len(data))
    result = cache.ensure(spec)
    cache.wait_for_mirrors()
    assert result.source == "url" and result.bytes_downloaded == len(data)
    assert result.blob.read_bytes() == data
    digest = hashlib.sha256(data).hexdigest()
    assert blobs.read("mirror-bkt", f"models/sha256/{digest}") == data
    assert cache.ensure(spec).cache_hit


def test_gs_source_outside_the_allowed_buckets_is_refused(tmp_path):
    data = b"x" * 10
    blobs = InMemoryBlobStore()
    blobs.write("someone-elses", "m.safetensors", data)
    cache = _gs_cache(tmp_path, blobs, ["team-models"])
    with pytest.raises(ModelFetchError, match="bucket someone-elses is not allowed"):
        cache.ensure(_gs_spec("gs://someone-elses/m.safetensors", data))
    assert not list((tmp_path / "models" / "sha256").iterdir())


def test_gs_source_missing_or_corrupt_fails_and_leaves_no_file(tmp_path):
    data = os.urandom(1000)
    blobs = InMemoryBlobStore()
    cache = _gs_cache(tmp_path, blobs, ["team-models"])
    with pytest.raises(ModelFetchError, match="does not exist"):
        cache.ensure(_gs_spec("gs://team-models/nope.safetensors", data))
    blobs.write("team-models", "bad.safetensors", data + b"!")
    with pytest.raises(ModelFetchError, match="sha256 mismatch"):
        cache.ensure(_gs_spec("gs://team-models/bad.safetensors", data))
    for folder in ("sha256", "urls", "partial"):
        assert not list((tmp_path / "models" / folder).iterdir())


# --- output format conversion -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "ext", "ctype", "pil"),
    [
        (OutputFormat.JPEG, ".jpg", "image/jpeg", "JPEG"),
        (OutputFormat.WEBP, ".webp", "image/webp", "WEBP"),
        (OutputFormat.PNG, ".png", "image/png", "PNG"),
    ],
)
def test_convert_reencodes_images(fmt, ext, ctype, pil):
    data, name, content_type = convert(_png(), "cb/out_00001_.png", fmt)
    assert name == "cb/out_00001_" + ext and content_type == ctype
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == pil and image.size == (6, 4)
        # RGBA to JPEG drops alpha; the colour survives (lossy, so within a few levels).
        r, g, b = image.convert("RGB").getpixel((2, 2))
        assert abs(r - 10) <= 4 and abs(g - 200) <= 4 and abs(b - 30) <= 4


def test_convert_leaves_originals_and_non_images_alone():
    png = _png()
    assert convert(png, "a.png", OutputFormat.ORIGINAL) == (png, "a.png", None)
    assert convert(b"GIF89a...", "a.mp4", OutputFormat.JPEG) == (b"GIF89a...", "a.mp4", None)


class _FakeComfy:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def view(self, filename: str, subfolder: str, folder_type: str) -> tuple[bytes, str]:
        return self.files[filename], "image/png"


def test_collector_stores_converted_outputs_with_their_hash():
    blobs = InMemoryBlobStore()
    comfy = _FakeComfy({"x_00001_.png": _png("RGB", (1, 2, 3)), "broken.png": b"not an image"})
    collector = OutputCollector(comfy, blobs, "outputs")  # type: ignore[arg-type]
    outputs = {"9": {"images": [{"filename": "x_00001_.png", "subfolder": "", "type": "output"}]}}
    [out] = collector.collect("j1", outputs, OutputFormat.WEBP)
    stored = blobs.read("outputs", "jobs/j1/outputs/x_00001_.webp")
    assert out.name == "x_00001_.webp" and out.content_type == "image/webp"
    assert stored is not None and hashlib.sha256(stored).hexdigest() == out.sha256
    bad = {"9": {"images": [{"filename": "broken.png", "subfolder": "", "type": "output"}]}}
    with pytest.raises(OutputError, match="could not be converted to jpeg"):
        collector.collect("j1", bad, OutputFormat.JPEG)


def test_agent_delivers_the_requested_output_format(tmp_path, standin):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    request = make_request(invert_workflow()).model_copy(deep=True)
    request.options.output_format = OutputFormat.JPEG
    job = put_job(store, blobs, config, request, VM)
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = DoneManifest.model_validate_json(blobs.read("signals", f"jobs/{job.job_id}/done.json"))
    assert done.status is DoneStatus.SUCCEEDED
    [out] = done.outputs
    assert out.name.endswith(".jpg") and out.content_type == "image/jpeg"
    stored = blobs.read("outputs", f"jobs/{job.job_id}/outputs/{out.name}")
    with Image.open(io.BytesIO(stored or b"")) as image:
        assert image.format == "JPEG"


# --- deadline → timed_out -----------------------------------------------------------------------


class _Interrupts:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def interrupt(self, prompt_id: str) -> None:
        self.calls.append(prompt_id)


def test_stop_past_the_deadline_times_out_and_interrupts_once():
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    job = put_job(store, blobs, local_config(), make_request(invert_workflow()), VM)
    job = job.model_copy(update={"deadline_at": SystemClock().now() - timedelta(seconds=1)})
    comfy = _Interrupts()
    stop = JobRunner.stop_for(job, comfy, SystemClock())  # type: ignore[arg-type]
    stop.attach("p1")
    assert stop.check() and stop.check()
    assert stop.reason is DoneStatus.TIMED_OUT and comfy.calls == ["p1"]


def test_job_past_its_deadline_mid_run_ends_timed_out(tmp_path, standin):
    requests.post(
        f"{standin}/_standin/faults",
        json={"slow_node_class": "ImageInvert", "slow_node_s": 30, "sampler_steps": 300},
        timeout=5,
    ).raise_for_status()
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    job = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    deadline = SystemClock().now() + timedelta(seconds=1.5)
    store.update_job(job.job_id, lambda j: j.model_copy(update={"deadline_at": deadline}))
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = DoneManifest.model_validate_json(blobs.read("signals", f"jobs/{job.job_id}/done.json"))
    assert done.status is DoneStatus.TIMED_OUT
    assert done.error is not None and done.error.type == "timed_out"
    history = requests.get(f"{standin}/history", timeout=5).json()
    events = [m[0] for entry in history.values() for m in entry["status"]["messages"]]
    assert "execution_interrupted" in events


# --- model-host tokens --------------------------------------------------------------------------


class _Scripted:
    """A requests.Session stand-in: answers by URL, records (url, headers) of every GET."""

    trust_env = True

    def __init__(self, answers: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, headers: dict[str, str] | None = None, **_: Any) -> requests.Response:
        self.sent.append((url, dict(headers or {})))
        status, extra, body = self.answers[url]
        resp = requests.Response()
        resp.status_code, resp.url = status, url
        resp.headers = CaseInsensitiveDict({"Content-Length": str(len(body)), **extra})
        # What requests gets from urllib3: the downloader reads it raw (no decoding).
        resp.raw = urllib3.HTTPResponse(body=io.BytesIO(body), preload_content=False)
        return resp


def _token_downloader(session: _Scripted) -> HttpDownloader:
    policy = HostPolicy(
        https_hosts=("huggingface.co", "cdn.example.net"),
        auth_headers={"huggingface.co": f"Bearer {TOKEN}"},
    )
    downloader = HttpDownloader(policy, parallelism=1, retries=0, sleep=lambda _s: None)
    downloader._local.session = session  # the one thread's session
    return downloader


def test_token_goes_to_its_host_not_to_the_redirect_target(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    body = b"weights" * 100
    session = _Scripted(
        {
            "https://huggingface.co/r/m.safetensors": (
                302,
                {"Location": "https://cdn.example.net/blob?sig=1"},
                b"",
            ),
            "https://cdn.example.net/blob?sig=1": (200, {}, body),
        }
    )
    fetched = _token_downloader(session).fetch(
        "https://huggingface.co/r/m.safetensors", tmp_path / "m"
    )
    assert fetched.sha256 == hashlib.sha256(body).hexdigest()
    (first_url, first), (second_url, second) = session.sent
    assert first_url.startswith("https://huggingface.co/")
    assert first["Authorization"] == f"Bearer {TOKEN}"
    assert second_url.startswith("https://cdn.example.net/") and "Authorization" not in second
    assert TOKEN not in caplog.text


def test_hf_resolve_redirect_to_the_hf_co_cdn_is_followed_without_the_token(tmp_path):
    body = b"weights" * 100
    cdn = "https://cas-bridge.xethub.hf.co/xet/abc?X-Amz-Signature=s"
    session = _Scripted(
        {
            "https://huggingface.co/o/r/resolve/main/m.safetensors": (302, {"Location": cdn}, b""),
            cdn: (200, {}, body),
        }
    )
    policy = HostPolicy(
        https_hosts=("huggingface.co",),
        redirect_hosts=("hf.co",),
        auth_headers={"huggingface.co": f"Bearer {TOKEN}"},
    )
    downloader = HttpDownloader(policy, parallelism=1, retries=0, sleep=lambda _s: None)
    downloader._local.session = session
    fetched = downloader.fetch(
        "https://huggingface.co/o/r/resolve/main/m.safetensors", tmp_path / "m"
    )
    assert fetched.sha256 == hashlib.sha256(body).hexdigest()
    assert "Authorization" not in session.sent[1][1]
    with pytest.raises(DownloadError, match="refused"):
        downloader.fetch(cdn, tmp_path / "n")  # a CDN URL is no source of its own


def test_failures_name_the_host_never_the_token(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    session = _Scripted({"https://huggingface.co/private": (403, {}, b"denied")})
    with pytest.raises(DownloadError) as info:
        _token_downloader(session).fetch("https://huggingface.co/private", tmp_path / "m")
    assert "huggingface.co" in str(info.value) and TOKEN not in str(info.value)
    assert TOKEN not in caplog.text


class _Secrets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def access_secret_version(self, name: str) -> Any:
        if name not in self.values:
            raise PermissionError(f"denied: {name}")
        payload = type("P", (), {"data": self.values[name].encode()})()
        return type("R", (), {"payload": payload})()


def test_tokens_from_secret_manager_are_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    config = DeploymentConfig(
        project_id="p",
        jobs_bucket="j",
        outputs_bucket="o",
        signals_bucket="s",
        huggingface_token_secret="hf-token",
        civitai_token_secret="civitai-token",
    )
    client = _Secrets({"projects/p/secrets/hf-token/versions/latest": f" {TOKEN}\n"})
    headers = load_auth_headers(config, client)
    assert headers == {"huggingface.co": f"Bearer {TOKEN}"}
    assert "civitai-token" in caplog.text  # the unreadable one is named
    assert TOKEN not in caplog.text


# --- metadata server retries --------------------------------------------------------------------


class _Flaky:
    def __init__(self, statuses: list[int], text: str = "comfyburst-gpu-0") -> None:
        self.statuses, self.text = list(statuses), text
        self.calls: list[dict[str, str]] = []

    def get(self, url: str, headers: dict[str, str], timeout: float) -> requests.Response:
        self.calls.append(headers)
        resp = requests.Response()
        resp.status_code = self.statuses.pop(0)
        resp._content = self.text.encode()
        return resp


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(metadata_mod.MetadataClient.get.retry, "sleep", lambda _s: None)


def test_metadata_retries_503_then_answers(no_backoff):
    session = _Flaky([503, 503, 200])
    client = MetadataClient(host="metadata.invalid", session=session)  # type: ignore[arg-type]
    assert client.instance_name() == "comfyburst-gpu-0"
    assert len(session.calls) == 3
    assert all(h == {"Metadata-Flavor": "Google"} for h in session.calls)


def test_metadata_gives_up_after_six_503s_and_404_is_absent(no_backoff):
    session = _Flaky([503] * 6)
    client = MetadataClient(host="metadata.invalid", session=session)  # type: ignore[arg-type]
    with pytest.raises(metadata_mod._Transient, match="HTTP 503"):
        client.get("instance/name")
    assert len(session.calls) == 6
    absent = MetadataClient(host="m.invalid", session=_Flaky([404]))  # type: ignore[arg-type]
    assert absent.attribute("comfyburst-config") is None


# --- the worker's store wiring -----------------------------------------------------------------


def test_the_worker_hands_the_store_the_deployments_collection_names(monkeypatch):
    from google.cloud import firestore, storage  # type: ignore[attr-defined]

    from comfyburst.adapters.firestore_store import FirestoreJobStore
    from comfyburst_worker.__main__ import _cloud_adapters

    class _Client:
        def __init__(self, project: str) -> None:
            self.names: list[str] = []

        def collection(self, name: str) -> str:
            self.names.append(name)
            return name

    monkeypatch.setattr(firestore, "Client", _Client)
    monkeypatch.setattr(storage, "Client", lambda project: object())
    config = local_config(jobs_collection="team-jobs", vms_collection="team-vms")
    store, _blobs, _clock = _cloud_adapters(config)
    assert isinstance(store, FirestoreJobStore)
    # (the pool's slot reservations and the warm stretches live beside the VM documents:
    # `{vms_collection}_slots`, `{vms_collection}_warm_idle`)
    names = store._client.names  # type: ignore[attr-defined]
    assert names == ["team-jobs", "team-vms", "idempotency", "team-vms_slots", "team-vms_warm_idle"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("gs://team-models//loras/style.safetensors", "no empty"),  # read as loras/… before
        ("gs://team-models/loras/./style.safetensors", "'.'"),
        ("gs://team-models/loras/style.safetensors?generation=1", "no query"),
        ("gs://mirror-bkt/models/sha256/" + "ab" * 32, "mirror"),
    ],
)
def test_gs_sources_are_read_only_as_the_url_spells_them_and_never_from_the_mirror(
    tmp_path, url: str, why: str
):
    data = b"y" * 100
    blobs = InMemoryBlobStore()
    blobs.write("team-models", "loras/style.safetensors", data)
    blobs.write("mirror-bkt", "models/sha256/" + "ab" * 32, data)
    cache = _gs_cache(tmp_path, blobs, ["team-models", "mirror-bkt"])
    with pytest.raises(ModelFetchError, match=re.escape(why)):
        cache.ensure(_gs_spec(url, data))
    assert not list((tmp_path / "models" / "sha256").iterdir())
