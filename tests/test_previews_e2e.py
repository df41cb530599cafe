"""End to end on the local cloud: a job whose sampler (the stand-in's slow node) sends preview
frames; the worker forwards them, the API hands them out and the node shows them while the
job runs; once it has ended there is none (no ComfyUI here: `_comfy` is monkeypatched)."""

from __future__ import annotations

from typing import Any

import pytest

from comfy_node import _comfy
from comfy_node.nodes import execute
from comfyburst.client import ApiClient, ApiError, ClientSettings
from comfyburst.domain.previews import preview_object
from tests._e2e_support import e2e_env, invert_workflow, with_node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def localcloud_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The shared e2e cloud (conftest's autouse wipe empties it, and starts no other)."""
    return e2e_env(request)


def test_previews_reach_the_node_while_the_job_samples(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = e2e_env(request)
    client = ApiClient(ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="none"))
    shown: list[tuple[int, Any]] = []
    monkeypatch.setattr(_comfy, "preview_reporter", lambda total: lambda v, i: shown.append((v, i)))
    jobs: list[str] = []
    original_submit = client.submit

    def submit(body: dict[str, Any], **options: Any) -> dict[str, Any]:
        job = original_submit(body, **options)
        jobs.append(job["job_id"])
        return job

    monkeypatch.setattr(client, "submit", submit)
    request_body = {"workflow": with_node(invert_workflow(), "ImageBlur", blur_radius=1, sigma=1)}
    images, *_ = execute(request_body, client)
    assert tuple(images.shape) == (1, 256, 256, 3)
    assert shown, "no preview reached the node during the run"
    # Shown while the sampler ran; one more may come with the run's last progress (1000)
    # while the worker is still ending it.
    assert any(value < 1000 for value, _ in shown), shown
    for _value, image in shown:
        assert image.mode == "RGB" and image.size == (64, 64)  # the stand-in's frames
    assert client.get(jobs[0])["state"] == "succeeded"
    assert client.preview(jobs[0]) is None  # ended: nothing to hand out
    assert _outputs_object(env, monkeypatch, preview_object(jobs[0])) is None  # deleted
    with pytest.raises(ApiError) as unknown:
        client.preview("0" * 32)
    assert unknown.value.status == 404 and unknown.value.code == "not_found"


def _outputs_object(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    """An object of this cloud's outputs bucket (fake-gcs-server), read as the API reads it."""
    from google.cloud import storage

    from comfyburst.adapters.gcs import GcsBlobStore

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    blobs = GcsBlobStore(storage.Client(project=env["COMFYBURST_PROJECT_ID"]))
    return blobs.read(env["COMFYBURST_OUTPUTS_BUCKET"], name)
