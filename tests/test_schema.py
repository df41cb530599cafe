"""The shared schema: request validation, manifests, and the exported JSON Schemas."""

import base64
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from comfyburst.schema import DoneManifest, JobRequest, ModelSpec, ResultMessage
from comfyburst.schema_export import EXPORTED, SCHEMA_DIR, render

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}}


@pytest.mark.parametrize("filename", sorted(EXPORTED))
def test_exported_json_schema_is_current(filename: str) -> None:
    checked_in = (SCHEMA_DIR / filename).read_text(encoding="utf-8")
    assert checked_in == render(EXPORTED[filename]), (
        f"{filename} is stale: run `python -m comfyburst.schema_export`"
    )


def test_minimal_request_gets_defaults() -> None:
    request = JobRequest.model_validate({"workflow": WORKFLOW})
    assert request.schema_version == 1
    assert request.options.timeout_s == 1800
    assert request.workflow_dict() == {
        "1": {"class_type": "EmptyImage", "inputs": WORKFLOW["1"]["inputs"]}
    }


@pytest.mark.parametrize(
    "filename",
    ["../x.safetensors", "/abs.ckpt", "a\\b.ckpt", "a\x00b", "", "a//b", "./a", "sub/../a", "C:x"],
)
def test_model_filenames_cannot_escape(filename: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelSpec(kind="checkpoints", filename=filename, url="https://civitai.com/x")
    assert info.value.errors()[0]["loc"] == ("filename",)


@pytest.mark.parametrize(
    "filename", ["a.safetensors.comfyburst.json", "a.ckpt.part", "x.ranged", "sub/m.TMP"]
)
def test_model_filenames_like_cache_markers_are_the_jobs_own(filename: str) -> None:
    # No name is reserved: the store names its files by hash (tests/test_worker_model_store.py).
    spec = ModelSpec(kind="checkpoints", filename=filename, url="https://civitai.com/x")
    assert spec.key == f"checkpoints/{filename}"


def test_model_subfolder_allowed_and_sha_normalised() -> None:
    spec = ModelSpec(
        kind="loras", filename="sdxl/style.safetensors", url="gs://b/x", sha256="AB" * 32
    )
    assert spec.key == "loras/sdxl/style.safetensors"
    assert spec.sha256 == "ab" * 32


def test_unknown_kind_and_bad_sha_rejected() -> None:
    with pytest.raises(ValidationError):
        ModelSpec(kind="../etc", filename="a", url="https://civitai.com/x")
    with pytest.raises(ValidationError):
        ModelSpec(kind="vae", filename="a", url="https://civitai.com/x", sha256="zz")


def test_duplicate_models_and_inputs_rejected() -> None:
    model = {"kind": "vae", "filename": "a.pt", "url": "https://huggingface.co/a"}
    with pytest.raises(ValidationError, match=r"duplicate model filenames: vae/a\.pt"):
        JobRequest.model_validate({"workflow": WORKFLOW, "models": [model, model]})
    image = {"name": "in.png", "data_b64": base64.b64encode(b"x").decode()}
    with pytest.raises(ValidationError, match=r"duplicate input names: in\.png"):
        JobRequest.model_validate({"workflow": WORKFLOW, "inputs": [image, image]})


def test_input_image_base64_and_size() -> None:
    request = JobRequest.model_validate(
        {
            "workflow": WORKFLOW,
            "inputs": [{"name": "a.png", "data_b64": base64.b64encode(b"hello!!").decode()}],
        }
    )
    assert request.inputs[0].decode() == b"hello!!"
    assert request.inputs[0].size_bytes == 7
    with pytest.raises(ValidationError, match="base64"):
        JobRequest.model_validate(
            {"workflow": WORKFLOW, "inputs": [{"name": "a.png", "data_b64": "!!"}]}
        )
    with pytest.raises(ValidationError):
        JobRequest.model_validate(
            {"workflow": WORKFLOW, "inputs": [{"name": "d/a.png", "data_b64": ""}]}
        )


def test_request_rejects_unknown_fields_and_empty_workflow() -> None:
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"workflow": WORKFLOW, "surprise": 1})
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"workflow": {}})
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"workflow": {"1": {"inputs": {}}}})


def test_signed_url_lifetime_capped_at_seven_days() -> None:
    with pytest.raises(ValidationError):
        JobRequest.model_validate(
            {"workflow": WORKFLOW, "options": {"signed_url_ttl_s": 8 * 86400}}
        )


def test_manifest_error_must_match_status() -> None:
    base = {"job_id": "j", "attempt": 1, "vm": "vm-1", "written_at": datetime.now(UTC)}
    with pytest.raises(ValidationError, match="failed manifest must carry an error"):
        DoneManifest.model_validate({**base, "status": "failed"})
    with pytest.raises(ValidationError, match="succeeded manifest carries no error"):
        DoneManifest.model_validate(
            {**base, "status": "succeeded", "error": {"type": "x", "message": "y"}}
        )
    ok = DoneManifest.model_validate({**base, "status": "cancelled"})
    assert ok.status.job_state.value == "cancelled"


def test_result_message_attributes() -> None:
    message = ResultMessage(job_id="j1", status="succeeded", attempt=1)
    assert message.attributes() == {"job_id": "j1", "status": "succeeded"}
