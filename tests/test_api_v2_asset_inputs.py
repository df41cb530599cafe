"""`core/ASSET` inputs of a v2 job (the app of functions/main.py on the emulators, the pinned
comfy-sdk's transport and asset handles): a reference to the caller's uploaded asset becomes
one of the job's input files, staged in its folder; a malformed, unknown or another caller's
reference is 422 `missing_asset` and nothing is written."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from comfy_low.errors import ApiError
from comfy_low.transport import ComfyLow
from comfy_sdk.assets import AssetFactory
from comfy_sdk.exceptions import MissingAsset, to_sdk_error

from comfyburst.schema import OutputFile
from comfyburst.services.submit import jobs_prefix
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)
from tests.test_api_v2 import _as, _error, _submit, cloud  # noqa: F401  (fixture)
from tests.test_api_v2_assets import lows, png_bytes  # noqa: F401  (fixture)

pytestmark = pytest.mark.emulator


def load_invert_save(image: Any) -> dict[str, Any]:
    """LoadImage -> ImageInvert -> SaveImage, the image named by `image`."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "v"}},
    }


def store_output(cloud: Cloud, job_id: str, data: bytes, name: str = "v_00001_.png") -> str:  # noqa: F811
    """`data` as the job's one output (a PNG), as the worker leaves it; its object name."""
    bucket = cloud.settings.outputs_bucket
    stored = f"jobs/{job_id}/outputs/{name}"
    cloud.blobs.write(bucket, stored, data, "image/png")
    output = OutputFile(
        name=name,
        content_type="image/png",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        gs_uri=f"gs://{bucket}/{stored}",
    )
    cloud.store.patch_job(job_id, {"outputs": [output.model_dump(mode="json")]})
    return stored


def test_a_reference_to_the_callers_upload_is_staged_as_the_jobs_input(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],  # noqa: F811
) -> None:
    data = png_bytes((200, 10, 10))
    reference = AssetFactory(lows["ana"]).from_bytes(data, filename="red.png").as_reference()
    job = lows["ana"].post_jobs(load_invert_save(reference), idempotency_key="in-1")
    assert job.status.value == "queued"
    bucket, prefix = cloud.settings.jobs_bucket, jobs_prefix(job.id)
    request = json.loads(cloud.blobs.read(bucket, prefix + "request.json"))
    name = request["workflow"]["1"]["inputs"]["image"]
    assert isinstance(name, str) and name.endswith("-red.png")
    assert cloud.blobs.read(bucket, f"{prefix}inputs/{name}") == data
    # The same asset twice is one input.
    twice = load_invert_save(reference)
    twice["4"] = {"class_type": "LoadImage", "inputs": {"image": reference}}
    again = lows["ana"].post_jobs(twice, idempotency_key="in-2")
    assert cloud.blobs.list(bucket, jobs_prefix(again.id) + "inputs/") == [
        f"{jobs_prefix(again.id)}inputs/{name}"
    ]


def test_another_callers_asset_is_missing_asset_and_nothing_is_written(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],  # noqa: F811
) -> None:
    reference = AssetFactory(lows["ana"]).from_bytes(png_bytes(), filename="a.png").as_reference()
    with pytest.raises(ApiError) as caught:
        lows["bo"].post_jobs(load_invert_save(reference), idempotency_key="steal")
    assert isinstance(to_sdk_error(caught.value), MissingAsset)
    assert caught.value.http_status == 422
    assert cloud.nothing_written()
    # The refusal left bo's key unclaimed.
    own = AssetFactory(lows["bo"]).from_bytes(png_bytes(), filename="b.png").as_reference()
    assert lows["bo"].post_jobs(load_invert_save(own), idempotency_key="steal").id


@pytest.mark.parametrize(
    "reference",
    [
        {"__type": "core/ASSET", "info": {"id": "up-" + "0" * 64}},  # no such asset
        {"__type": "core/ASSET", "info": {"id": "out-0-no-such-job"}},
        {"__type": "core/ASSET", "info": {"id": 7}},
        {"__type": "core/ASSET", "info": {}},
        {"__type": "core/ASSET"},
        {"__type": "core/IMAGE", "info": {"id": "up-" + "0" * 64}},
        {"__type": "core/ASSET", "info": {"id": "x"}, "extra": 1},
    ],
)
def test_bad_references_are_missing_asset_and_write_nothing(
    cloud: Cloud,  # noqa: F811
    reference: dict[str, Any],
) -> None:
    response = _submit(cloud, {"workflow": load_invert_save(reference)}, **_as("ana"))
    error = _error(response, 422, "missing_asset")
    assert error["details"]["field"] == "workflow.1.inputs.image"
    assert cloud.nothing_written()


def test_an_output_asset_of_the_callers_job_can_be_an_input(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],  # noqa: F811
) -> None:
    first = lows["ana"].post_jobs(load_invert_save(
        AssetFactory(lows["ana"]).from_bytes(png_bytes(), filename="a.png").as_reference()
    ))  # fmt: skip
    out_bytes = png_bytes((5, 6, 7))
    store_output(cloud, first.id, out_bytes)
    reference = {"__type": "core/ASSET", "info": {"id": f"out-0-{first.id}"}}
    second = lows["ana"].post_jobs(load_invert_save(reference))
    prefix = jobs_prefix(second.id)
    names = cloud.blobs.list(cloud.settings.jobs_bucket, prefix + "inputs/")
    assert [cloud.blobs.read(cloud.settings.jobs_bucket, n) for n in names] == [out_bytes]
    with pytest.raises(ApiError) as caught:
        lows["bo"].post_jobs(load_invert_save(reference))
    assert isinstance(to_sdk_error(caught.value), MissingAsset)
