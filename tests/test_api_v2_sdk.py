"""The official client, comfy-sdk (pinned, unmodified), against the local cloud's /api/v2: the
API with two API keys sent as Bearer tokens, one pool VM running the worker and the ComfyUI
stand-in. Nothing is mocked: the SDK's own submit, run-and-poll, cancel and output download."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from comfy_low.errors import ApiError
from comfy_low.transport import ComfyLow
from comfy_sdk import (
    Comfy,
    IdempotencyKeyReuse,
    NotFound,
    OutputReady,
    StatusChange,
    WorkflowFormatUi,
)
from comfy_sdk.exceptions import to_sdk_error
from PIL import Image

from localcloud.scenarios.harness import cloud_config, running_cloud
from tests._e2e_support import ERROR_MESSAGE, STANDIN_FAULTS, invert_workflow, with_node
from tests._poll import poll_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

KEYS = {"ana": "sdk-key-ana", "bo": "sdk-key-bo"}
UI_EXPORT = {"last_node_id": 1, "last_link_id": 0, "nodes": [{"id": 1}], "links": []}


@pytest.fixture(scope="module")
def cloud_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Its own cloud: api_key auth with the SDK callers' keys (the shared e2e cloud runs
    without auth, and the auth mode is read when the functions start)."""
    import hashlib

    hashes = ",".join(f"{w}={hashlib.sha256(k.encode()).hexdigest()}" for w, k in KEYS.items())
    settings_env = {"COMFYBURST_AUTH_MODE": "api_key", "COMFYBURST_API_KEY_HASHES": hashes}
    config = cloud_config(
        tmp_path_factory.mktemp("v2-sdk-cloud"), pool_size=1, settings_env=settings_env
    )
    with running_cloud(config, standin_faults=STANDIN_FAULTS) as cloud:
        yield dict(cloud.env)


@pytest.fixture
def localcloud_env(cloud_env: dict[str, str]) -> dict[str, str]:
    """This module's cloud (conftest's autouse wipe empties it before each test)."""
    return cloud_env


@pytest.fixture
def clients(
    cloud_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Comfy]]:
    # "The two lines": the deployment's address and a key, nothing else.
    monkeypatch.setenv("COMFY_BASE_URL", cloud_env["COMFYBURST_API_URL"])
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    made = {who: Comfy(api_key=key, timeout=60.0) for who, key in KEYS.items()}
    yield made
    for client in made.values():
        client.close()


def test_run_and_download_the_inverted_image(clients: dict[str, Comfy]) -> None:
    ana = clients["ana"]
    job = ana.run(ana.workflows.from_json(invert_workflow()), timeout=240)
    assert job.status == "succeeded"
    (output,) = job.outputs
    assert output.type == "image" and output.content_type == "image/png"
    assert output.node_id == "3" and output.job_id == job.id
    data = output.to_bytes()
    assert len(data) == output.size_bytes
    image = Image.open(io.BytesIO(data)).convert("RGB")
    # EmptyImage #336699, inverted.
    assert image.size == (256, 256)
    assert image.getpixel((10, 10)) == (0xCC, 0x99, 0x66)
    assert job.get_outputs("3")[0].id == output.id
    # The content route redirects to a signed URL of the outputs bucket.
    assert output.get_download_url().expires_at is not None
    listed = [summary.id for summary in ana.list_jobs()]
    assert listed == [job.id]
    ran = job.get_workflow()
    assert ran.format == "api" and ran.graph == invert_workflow()


def test_the_event_stream_in_order(clients: dict[str, Comfy]) -> None:
    ana = clients["ana"]
    job = ana.submit(ana.workflows.from_json(invert_workflow()))
    events = list(job.events())  # ends after the terminal status
    statuses = [e.status for e in events if isinstance(e, StatusChange)]
    order = ["queued", "running", "succeeded"]
    assert statuses[-1] == "succeeded"
    assert statuses == sorted(set(statuses), key=order.index), statuses
    (ready,) = [i for i, e in enumerate(events) if isinstance(e, OutputReady)]
    assert ready < len(events) - 1
    output = events[ready]
    assert isinstance(output, OutputReady)
    assert output.output.to_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cancel_a_running_job(clients: dict[str, Comfy]) -> None:
    ana = clients["ana"]
    slow = with_node(invert_workflow(), "ImageBlur", blur_radius=1, sigma=1.0)
    job = ana.submit(ana.workflows.from_json(slow))
    poll_until(
        lambda: job.refresh().status != "queued", "the job to start", timeout_s=240, interval_s=0.2
    )
    assert job.status == "running"
    assert job.cancel().status in ("canceling", "canceled")
    assert job.wait(timeout=120).status == "canceled"
    assert job.outputs == []


def test_a_reused_idempotency_key_raises_the_sdk_reuse_error(clients: dict[str, Comfy]) -> None:
    ana = clients["ana"]
    workflow = ana.workflows.from_json(invert_workflow())
    first = ana.submit(workflow, idempotency_key="sdk-once")
    with pytest.raises(IdempotencyKeyReuse) as reused:
        ana.submit(workflow, idempotency_key="sdk-once")
    assert reused.value.idempotency_key == "sdk-once"
    assert [summary.id for summary in ana.list_jobs()] == [first.id]
    first.cancel()


def test_a_ui_format_workflow_raises_the_format_error(
    clients: dict[str, Comfy], cloud_env: dict[str, str]
) -> None:
    ana = clients["ana"]
    # The SDK refuses it before sending; the server refuses it too, with the same error.
    with pytest.raises(WorkflowFormatUi):
        ana.submit(ana.workflows.from_json(UI_EXPORT))
    low = ComfyLow(cloud_env["COMFYBURST_API_URL"], KEYS["ana"])
    with low, pytest.raises(ApiError) as refused:
        low.post_jobs(UI_EXPORT, idempotency_key="ui-1")
    assert refused.value.http_status == 422
    assert isinstance(to_sdk_error(refused.value), WorkflowFormatUi)
    assert list(ana.list_jobs()) == []


def test_a_second_callers_key_sees_neither_the_job_nor_its_output(
    clients: dict[str, Comfy], cloud_env: dict[str, str]
) -> None:
    ana, bo = clients["ana"], clients["bo"]
    job = ana.run(ana.workflows.from_json(invert_workflow()), timeout=240)
    (output,) = job.outputs
    with pytest.raises(NotFound):
        bo.jobs.get(job.id)
    assert list(bo.list_jobs()) == []
    with ComfyLow(cloud_env["COMFYBURST_API_URL"], KEYS["bo"]) as low:
        for call in (lambda: low.get_asset(output.id), lambda: low.cancel_job(job.id)):
            with pytest.raises(ApiError) as refused:
                call()
            assert isinstance(to_sdk_error(refused.value), NotFound)
            assert _code(refused.value) == "not_found"
    assert ana.jobs.get(job.id).status == "succeeded"


def test_an_uploaded_input_is_inverted_and_stays_its_uploaders(
    clients: dict[str, Comfy], cloud_env: dict[str, str]
) -> None:
    ana = clients["ana"]
    picture = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 100, 200)).save(picture, format="PNG")
    asset = ana.assets.from_bytes(picture.getvalue(), filename="blue.png")
    workflow = ana.workflows.from_json(
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {
                "class_type": "SaveImage",
                "inputs": {"images": ["2", 0], "filename_prefix": "v"},
            },
        }
    )
    workflow.set_input("1", "image", asset)  # the SDK uploads it and sends a core/ASSET ref
    job = ana.run(workflow, timeout=240)
    assert job.status == "succeeded" and asset.id is not None
    (output,) = job.outputs
    inverted = Image.open(io.BytesIO(output.to_bytes())).convert("RGB")
    assert inverted.getpixel((3, 3)) == (245, 155, 55)
    with ComfyLow(cloud_env["COMFYBURST_API_URL"], KEYS["bo"]) as low:
        assert low.head_asset_by_hash(asset.hash) is False
        with pytest.raises(ApiError) as refused:
            low.get_asset(asset.id)
        assert isinstance(to_sdk_error(refused.value), NotFound)


def _code(error: Any) -> str:
    return str(error.code)


def test_a_jobs_logs_hold_what_comfyui_printed_during_it_only(
    clients: dict[str, Comfy], cloud_env: dict[str, str]
) -> None:
    """`/logs` (not in the SDK): the stand-in's lines of that job, none of the job before."""
    ana = clients["ana"]
    scale = {"upscale_method": "nearest-exact", "width": 64, "height": 64, "crop": "disabled"}
    failing = ana.submit(
        ana.workflows.from_json(with_node(invert_workflow(), "ImageScale", **scale))
    )
    assert failing.wait(timeout=240).status == "failed"
    ok = ana.run(ana.workflows.from_json(invert_workflow()), timeout=240)
    assert ok.status == "succeeded"

    def logs(job_id: str, who: str = "ana") -> requests.Response:
        url = f"{cloud_env['COMFYBURST_API_URL']}/api/v2/jobs/{job_id}/logs"
        headers = {"Authorization": f"Bearer {KEYS[who]}"}
        return requests.get(url, headers=headers, timeout=60)

    failed_log, ok_log = logs(failing.id), logs(ok.id)
    assert failed_log.status_code == ok_log.status_code == 200
    assert failed_log.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert f"!!! Exception during processing !!! {ERROR_MESSAGE}" in failed_log.text.splitlines()
    lines = ok_log.text.splitlines()
    assert lines[0] == "got prompt" and lines.count("got prompt") == 1
    assert lines[-1].startswith("Prompt executed in ")
    assert ERROR_MESSAGE not in ok_log.text and "Traceback" not in ok_log.text
    assert logs(ok.id, "bo").status_code == 404
