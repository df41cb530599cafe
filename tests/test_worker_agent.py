"""The whole agent in one process: in-memory store and buckets, the ComfyUI stand-in, a local
model server. Claim → models → prompt → outputs → done.json → drain → next job."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from comfyburst.schema import DoneManifest, DoneStatus, ModelKind, ModelSpec, VmRef
from comfyburst.states import JobState
from tests._model_server import ModelServer
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


@pytest.fixture
def model_file(tmp_path) -> tuple[Path, bytes]:
    data = os.urandom(2 * 1024 * 1024)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    return path, data


def _done(blobs: InMemoryBlobStore, job_id: str) -> DoneManifest:
    raw = blobs.read("signals", f"jobs/{job_id}/done.json")
    assert raw is not None, "no done.json"
    return DoneManifest.model_validate_json(raw)


def test_two_jobs_one_boot_model_fetched_once(tmp_path, standin, model_file):
    src, data = model_file
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    with ModelServer({"/m.safetensors": src}) as server:
        config = local_config(server.hostport)
        spec = ModelSpec(
            kind=ModelKind.CHECKPOINTS,
            filename="tiny.safetensors",
            url=server.url("/m.safetensors"),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        first = put_job(store, blobs, config, make_request(invert_workflow(), [spec]), VM)
        second = put_job(store, blobs, config, make_request(invert_workflow("cb/two"), [spec]))
        agent = make_agent(local_settings(standin, tmp_path / "models"), config, store, blobs, VM)
        agent.run(first.job_id)
        model_gets = [p for p, _, _ in server.requests if p == "/m.safetensors"]

    one, two = _done(blobs, first.job_id), _done(blobs, second.job_id)
    assert one.status is DoneStatus.SUCCEEDED and two.status is DoneStatus.SUCCEEDED
    assert one.next_job_id == second.job_id and two.next_job_id is None
    assert one.timings.model_downloads == 1 and two.timings.model_cache_hits == 1
    assert len(model_gets) == 1
    out = one.outputs[0]
    stored = blobs.read("outputs", f"jobs/{first.job_id}/outputs/{out.name}")
    assert stored is not None and hashlib.sha256(stored).hexdigest() == out.sha256
    assert out.content_type == "image/png"
    # color 255 is 0x0000FF (blue); inverted it is yellow.
    assert Image.open(io.BytesIO(stored)).convert("RGB").getpixel((0, 0)) == (255, 255, 0)
    assert store.get_job(second.job_id).vm.name == VM.name  # type: ignore[union-attr]
    record, _ = store.get_vm(VM.name)
    assert record is not None and record.lease is None
    assert "checkpoints/tiny.safetensors" in record.models_cached


def test_execution_error_fails_with_node_id(tmp_path, standin):
    requests.post(
        f"{standin}/_standin/faults",
        json={"execution_error": {"class_type": "ImageInvert", "message": "boom"}},
        timeout=5,
    ).raise_for_status()
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    job = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = _done(blobs, job.job_id)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert done.error.type == "execution_error"
    assert done.error.node_id == "2" and done.error.node_type == "ImageInvert"
    assert "boom" in done.error.message


def test_validation_error_fails_with_node_details(tmp_path, standin):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    workflow = invert_workflow()
    workflow["2"]["inputs"] = {}
    job = put_job(store, blobs, config, make_request(workflow), VM)
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = _done(blobs, job.job_id)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert done.error.type == "validation_error"
    assert done.error.node_id == "2" and done.error.node_type == "ImageInvert"


def test_partly_valid_workflow_runs_its_valid_output(tmp_path, standin):
    # ComfyUI accepts a prompt when one output validates and runs that one: so does the agent.
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    workflow = invert_workflow()
    workflow["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["1", 7], "filename_prefix": "x"},
    }
    job = put_job(store, blobs, config, make_request(workflow), VM)
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = _done(blobs, job.job_id)
    assert done.status is DoneStatus.SUCCEEDED, done.error
    assert len(done.outputs) == 1 and done.outputs[0].content_type == "image/png"


def test_input_image_is_uploaded_and_used(tmp_path, standin):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    request = make_request(
        invert_workflow(load_image="in.png"), inputs={"in.png": buffer.getvalue()}
    )
    job = put_job(store, blobs, config, request, VM)
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = _done(blobs, job.job_id)
    assert done.status is DoneStatus.SUCCEEDED, done.error
    stored = blobs.read("outputs", f"jobs/{job.job_id}/outputs/{done.outputs[0].name}")
    assert Image.open(io.BytesIO(stored or b"")).convert("RGB").getpixel((0, 0)) == (245, 235, 225)


def test_cancel_mid_run_interrupts_comfyui(tmp_path, standin):
    requests.post(
        f"{standin}/_standin/faults",
        json={"slow_node_class": "ImageInvert", "slow_node_s": 20, "sampler_steps": 200},
        timeout=5,
    ).raise_for_status()
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    job = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    agent = make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM)
    thread = threading.Thread(target=agent.run, args=(job.job_id,), daemon=True)
    began = time.monotonic()
    thread.start()
    while store.get_job(job.job_id).progress.node != "2":  # type: ignore[union-attr]
        assert time.monotonic() - began < 60, "the slow node never started"
        time.sleep(0.02)
    began = time.monotonic()  # the slow node runs: it would end 20 s from about now
    store.update_job(job.job_id, lambda j: j.model_copy(update={"cancel_requested": True}))
    thread.join(timeout=15)
    assert not thread.is_alive()
    done = _done(blobs, job.job_id)
    assert done.status is DoneStatus.CANCELLED
    assert time.monotonic() - began < 15  # well before the 20 s slow node would end
    history = requests.get(f"{standin}/history", timeout=5).json()
    messages = [m[0] for entry in history.values() for m in entry["status"]["messages"]]
    assert "execution_interrupted" in messages


def test_not_this_vms_job_is_not_claimed(tmp_path, standin):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    other = VmRef(name="comfyburst-gpu-9", zone="us-central1-b")
    job = put_job(store, blobs, config, make_request(invert_workflow()), other)
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    assert store.get_job(job.job_id).state is JobState.STARTING  # type: ignore[union-attr]
    assert blobs.read("signals", f"jobs/{job.job_id}/done.json") is None
    assert json.loads(json.dumps(store.jobs[job.job_id].vm.model_dump()))["name"] == other.name  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), requests.ConnectionError("https://x/?token=SECRET")],
)
def test_unexpected_error_fails_the_job_not_the_agent(tmp_path, standin, error):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config("127.0.0.1:9")
    spec = ModelSpec(kind=ModelKind.LORAS, filename="x.safetensors", url="http://127.0.0.1:9/x")
    job = put_job(store, blobs, config, make_request(invert_workflow(), [spec]), VM)
    agent = make_agent(local_settings(standin, tmp_path / "models"), config, store, blobs, VM)

    def ensure(_spec: ModelSpec, _cancel: object = None) -> None:
        raise error

    agent.s.cache.ensure = ensure  # type: ignore[method-assign]
    agent.run(job.job_id)  # returns: the agent survives
    done = _done(blobs, job.job_id)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert done.error.type == "worker_error"
    assert type(error).__name__ in done.error.message and "SECRET" not in done.error.message


def test_main_powers_off_even_when_the_agent_crashes(tmp_path, monkeypatch):
    from comfyburst_worker import __main__ as entry

    class _Metadata:
        def deployment_config(self):
            return local_config()

        def instance_name(self):
            return VM.name

        def zone(self):
            return VM.zone

        def job_id(self):
            return "job-1"

    class _Crashing:
        def __init__(self, *_a: object) -> None:
            pass

        def run(self, _boot_job: str | None) -> None:
            raise RuntimeError("bug in the agent")

    powered: list[str] = []
    settings = local_settings("http://127.0.0.1:9", tmp_path / "m", poweroff_command="halt -p")
    monkeypatch.setattr(entry, "WorkerSettings", lambda: settings)
    monkeypatch.setattr(entry, "MetadataClient", _Metadata)
    monkeypatch.setattr(
        entry, "_cloud_adapters", lambda _c: (InMemoryJobStore(), InMemoryBlobStore(), None)
    )
    monkeypatch.setattr(entry, "load_auth_headers", lambda _c: {})
    monkeypatch.setattr(entry, "Agent", _Crashing)
    monkeypatch.setattr(entry, "poweroff", lambda command, _runner: powered.append(command))
    assert entry.main([]) == 1
    assert powered == ["halt -p"]
