"""The whole agent (in-memory store and buckets) driving a REAL ComfyUI at COMFYUI_URL:
success with pixel values checked, validation errors, an execution error, a cancel mid-run.

Only core, model-free nodes are used. Inputs vary per run (a random colour) so ComfyUI's
node cache cannot turn a run into a no-op. Outputs land under `comfyburst_test/` in that
ComfyUI's output folder.
"""

from __future__ import annotations

import io
import os
import random
import threading
import time
from typing import Any

import pytest
import requests
from PIL import Image

from comfyburst.domain.job_logs import job_log_object
from comfyburst.schema import DoneManifest, DoneStatus, VmRef
from comfyburst_worker import prompt_scope
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

COMFYUI_URL = os.environ.get("COMFYUI_URL", "").rstrip("/")

pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not COMFYUI_URL, reason="COMFYUI_URL is not set (needs a real ComfyUI)"),
]

VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")


def _colour() -> tuple[int, tuple[int, int, int]]:
    """A random 24-bit colour as ComfyUI's EmptyImage takes it, and its RGB; no channel near
    the middle, so an inverted channel never looks like the original one."""
    rgb = tuple(
        random.choice([random.randrange(0, 100), random.randrange(156, 256)]) for _ in "rgb"
    )
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2], rgb  # type: ignore[return-value]


def _close(pixel: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    # ComfyUI computes in float32 and truncates to uint8 on save: 255 - c may come out 254 - c.
    return all(abs(a - b) <= 1 for a, b in zip(pixel, expected, strict=True))


def _run(tmp_path, workflow: dict[str, Any]) -> tuple[DoneManifest, InMemoryBlobStore, str]:
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    job = put_job(store, blobs, config, make_request(workflow), VM)
    settings = local_settings(COMFYUI_URL, tmp_path / "models", comfyui_ready_timeout_s=30)
    make_agent(settings, config, store, blobs, VM).run(job.job_id)
    raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
    assert raw is not None, "no done.json"
    return DoneManifest.model_validate_json(raw), blobs, job.job_id


def test_model_free_workflow_produces_the_inverted_image(tmp_path):
    value, (r, g, b) = _colour()
    workflow = invert_workflow("comfyburst_test/invert")
    workflow["1"]["inputs"]["color"] = value
    done, blobs, job_id = _run(tmp_path, workflow)
    assert done.status is DoneStatus.SUCCEEDED, done.error
    assert len(done.outputs) == 1
    out = done.outputs[0]
    assert out.content_type == "image/png" and out.name.startswith("invert")
    data = blobs.read("outputs", f"jobs/{job_id}/outputs/{out.name}")
    assert data is not None and len(data) == out.size_bytes
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (32, 32)
    inverted = (255 - r, 255 - g, 255 - b)
    assert _close(image.getpixel((0, 0)), inverted), (image.getpixel((0, 0)), inverted)
    assert _close(image.getpixel((31, 31)), inverted)
    assert not _close(image.getpixel((0, 0)), (r, g, b))
    assert 0 < done.timings.execution_s < 30


def test_the_same_workflow_twice_reruns_its_output_node_upstream_stays_cached(tmp_path):
    value, _ = _colour()
    workflow = invert_workflow("comfyburst_test/twice")
    workflow["1"]["inputs"]["color"] = value
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    first = put_job(store, blobs, config, make_request(workflow), VM)
    second = put_job(store, blobs, config, make_request(workflow))  # queued: the drain takes it
    settings = local_settings(COMFYUI_URL, tmp_path / "models", comfyui_ready_timeout_s=30)
    make_agent(settings, config, store, blobs, VM).run(first.job_id)
    for job in (first, second):
        raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
        assert raw is not None
        done = DoneManifest.model_validate_json(raw)
        assert done.status is DoneStatus.SUCCEEDED and len(done.outputs) == 1, done.error
    history = requests.get(f"{COMFYUI_URL}/history", params={"max_items": 50}, timeout=10).json()
    (entry,) = [
        e
        for e in history.values()
        if e["prompt"][2]["3"]["inputs"].get(prompt_scope.RUN_INPUT) == second.job_id
    ]
    cached = dict(entry["status"]["messages"])["execution_cached"]["nodes"]
    assert "1" in cached and "2" in cached  # upstream replayed from ComfyUI's cache
    assert "3" not in cached  # the SaveImage of this job ran again


def test_value_below_min_fails_with_the_node_and_input(tmp_path):
    workflow = invert_workflow("comfyburst_test/below_min")
    workflow["1"]["inputs"]["width"] = 0  # EmptyImage.width has min 1
    done, _, _ = _run(tmp_path, workflow)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert done.error.type == "validation_error"
    assert done.error.node_id == "1" and done.error.node_type == "EmptyImage"
    assert "width" in done.error.message
    node_errors = done.error.details["node_errors"]
    assert node_errors["1"]["errors"][0]["type"] == "value_smaller_than_min"


def test_unknown_class_fails_naming_the_class(tmp_path):
    workflow = invert_workflow("comfyburst_test/unknown")
    workflow["2"]["class_type"] = "NoSuchNodeAnywhere"
    done, _, _ = _run(tmp_path, workflow)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert done.error.type == "validation_error"
    assert "NoSuchNodeAnywhere" in done.error.message
    assert done.error.node_id == "2" and done.error.node_type == "NoSuchNodeAnywhere"
    assert done.error.details["error"]["type"] == "invalid_prompt"


def test_execution_error_fails_with_the_node_id(tmp_path):
    value, _ = _colour()
    workflow = invert_workflow("../../escape_attempt")
    workflow["1"]["inputs"]["color"] = value
    done, blobs, job_id = _run(tmp_path, workflow)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert done.error.type == "execution_error"
    assert done.error.node_id == "3" and done.error.node_type == "SaveImage"
    # Nothing uploaded but the job's log: ComfyUI's own lines of this run.
    assert done.outputs == [] and blobs.list("outputs", f"jobs/{job_id}/") == [
        job_log_object(job_id)
    ]
    log = (blobs.read("outputs", job_log_object(job_id)) or b"").decode().splitlines()
    assert "got prompt" in log and log.count("got prompt") == 1
    assert any(line.startswith("!!! Exception during processing !!! ") for line in log)
    assert log[-1].startswith("Prompt executed in ")


def _slow_workflow(blurs: int) -> dict[str, Any]:
    """EmptyImage -> `blurs` wide ImageBlurs (~3 s each on this CPU) -> PreviewImage."""
    value, _ = _colour()
    workflow: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 384, "height": 384, "batch_size": 1, "color": value},
        }
    }
    for i in range(2, blurs + 2):
        workflow[str(i)] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [str(i - 1), 0], "blur_radius": 31, "sigma": 10.0},
        }
    last = str(blurs + 2)
    workflow[last] = {"class_type": "PreviewImage", "inputs": {"images": [str(blurs + 1), 0]}}
    return workflow


def _history_of(workflow: dict[str, Any]) -> dict[str, Any]:
    """The real ComfyUI's history entry of the run of this (unique) workflow."""
    history = requests.get(f"{COMFYUI_URL}/history", params={"max_items": 50}, timeout=10).json()
    for entry in history.values():
        # The worker adds its run input to output nodes (prompt_scope.rerun_outputs).
        sent = {
            node_id: {
                **node,
                "inputs": {k: v for k, v in node["inputs"].items() if k != prompt_scope.RUN_INPUT},
            }
            for node_id, node in entry["prompt"][2].items()
        }
        if sent == workflow:
            return entry
    raise AssertionError("the run is not in ComfyUI's history")


def test_cancel_mid_run_interrupts_the_real_comfyui(tmp_path):
    blurs = 8
    workflow = _slow_workflow(blurs)
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    job = put_job(store, blobs, config, make_request(workflow, timeout_s=170), VM)
    settings = local_settings(COMFYUI_URL, tmp_path / "models", comfyui_ready_timeout_s=30)
    agent = make_agent(settings, config, store, blobs, VM)
    thread = threading.Thread(target=agent.run, args=(job.job_id,), daemon=True)
    thread.start()
    began = time.monotonic()
    while (store.get_job(job.job_id).progress.node or "") != "2":  # type: ignore[union-attr]
        assert time.monotonic() - began < 60, "the first blur never started"
        assert thread.is_alive(), "the agent ended before the blur started"
        time.sleep(0.05)
    cancelled_at = time.monotonic()
    store.update_job(job.job_id, lambda j: j.model_copy(update={"cancel_requested": True}))
    thread.join(timeout=90)
    assert not thread.is_alive()
    waited = time.monotonic() - cancelled_at
    raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
    assert raw is not None
    done = DoneManifest.model_validate_json(raw)
    assert done.status is DoneStatus.CANCELLED and done.outputs == []
    entry = _history_of(workflow)
    events = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in events and "execution_success" not in events
    interrupted = dict(entry["status"]["messages"])["execution_interrupted"]
    # It lands at the next node boundary: a blur or two ran, not all eight (~24 s).
    assert len(interrupted["executed"]) < blurs
    assert waited < 12, f"cancel took {waited:.1f} s"
