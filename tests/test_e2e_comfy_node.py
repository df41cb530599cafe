"""End to end from the ComfyUI node's function to the local cloud and back (no ComfyUI here:
the `_comfy` edge is monkeypatched to observe progress and to press Cancel)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from comfy_node import _comfy
from comfy_node._vendor.comfyburst_core.client import ApiClient, ClientSettings
from comfy_node.nodes import ComfyBurstRunWorkflow, execute
from comfy_node.remote import RemoteJobCancelled, RemoteJobError
from tests._e2e_support import ERROR_MESSAGE, e2e_env, invert_workflow, with_node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def localcloud_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict:
    """This module's cloud; the node finds the API through COMFYBURST_API_URL."""
    env = e2e_env(request)
    monkeypatch.setenv("COMFYBURST_API_URL", env["COMFYBURST_API_URL"])
    monkeypatch.setenv("COMFYBURST_AUTH", "none")
    return env


@pytest.fixture
def progress(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    monkeypatch.setattr(_comfy, "progress_reporter", lambda total: seen.append)
    return seen


def test_run_workflow_node_returns_the_inverted_image(localcloud_env: dict, progress: list) -> None:
    images, result_json, _saved, video, audio = ComfyBurstRunWorkflow().run(
        json.dumps(invert_workflow()), timeout_s=240
    )
    assert tuple(images.shape) == (1, 256, 256, 3)
    pixel = [round(float(v) * 255) for v in images[0, 0, 0]]
    assert pixel == [0xCC, 0x99, 0x66]  # EmptyImage #336699, inverted
    assert json.loads(result_json)["state"] == "succeeded"
    assert (video, audio) == (None, None)  # an image workflow
    assert progress and progress[-1] == 1000


def test_progress_of_a_slow_node_is_reported(localcloud_env: dict, progress: list) -> None:
    request = {"workflow": with_node(invert_workflow(), "ImageBlur", blur_radius=1, sigma=1.0)}
    images, *_ = execute(request)
    assert tuple(images.shape) == (1, 256, 256, 3)
    partial = [value for value in progress if 0 < value < 1000]
    assert partial, f"no progress between 0 and 1000 was reported: {progress}"
    assert progress == sorted(progress)


def test_interrupt_in_comfyui_cancels_the_remote_job(
    localcloud_env: dict, monkeypatch: pytest.MonkeyPatch, progress: list
) -> None:
    client = ApiClient(ClientSettings(api_url=localcloud_env["COMFYBURST_API_URL"], auth="none"))
    seen: dict[str, Any] = {}
    original_get = client.get

    def get(job_id: str, **options: Any) -> dict[str, Any]:
        job = original_get(job_id, **options)
        seen["job"] = job
        return job

    monkeypatch.setattr(client, "get", get)
    # Press Cancel once the remote job runs (its slow node takes seconds).
    monkeypatch.setattr(
        _comfy, "interrupt_requested", lambda: seen.get("job", {}).get("state") == "running"
    )
    request = {"workflow": with_node(invert_workflow(), "ImageBlur", blur_radius=1, sigma=1.0)}
    began = time.monotonic()
    with pytest.raises(RemoteJobCancelled):
        execute(request, client)
    job_id = seen["job"]["job_id"]
    assert original_get(job_id)["state"] == "cancelled"
    assert time.monotonic() - began < 120


def test_execution_error_names_the_remote_node(localcloud_env: dict, progress: list) -> None:
    workflow = with_node(
        invert_workflow(), "ImageScale", upscale_method="nearest-exact", width=64, height=64,
        crop="disabled",
    )  # fmt: skip
    with pytest.raises(RemoteJobError) as failure:
        execute({"workflow": workflow})
    message = str(failure.value)
    assert "remote node 5" in message
    assert ERROR_MESSAGE in message
