"""Pre-flight verdicts against what a real ComfyUI 0.3.64 answered (prompt_errors.json)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from comfyburst.preflight import Catalogue, PromptVerdict, validate_prompt

DATA = Path(__file__).parent / "test_data" / "comfyui_api"
CASES: dict[str, Any] = json.loads((DATA / "prompt_errors.json").read_text())
# Not about the workflow: the body is not JSON, so the HTTP layer answers before validation.
HTTP_LAYER_CASES = {"malformed_json_body"}
WORKFLOW_CASES = sorted(set(CASES) - HTTP_LAYER_CASES)
# The capture's input folder did not hold the file LoadImage asked for.
CAPTURE_INPUT_FILES: list[str] = []
# The capture's models folder held one checkpoint; the shipped catalogue (the image's) holds none.
CAPTURE_MODELS = {"checkpoints": ["tiny_sd15_random.safetensors"]}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    # The catalogue the package ships (the one copy of the captured /object_info).
    return Catalogue.load_default()


def _verdict(case: dict[str, Any], catalogue: Catalogue) -> PromptVerdict:
    body = case["request"]["json"]
    return validate_prompt(
        body.get("prompt"), catalogue, input_files=CAPTURE_INPUT_FILES, extra_models=CAPTURE_MODELS
    )


def _summary(node_errors: dict[str, Any]) -> dict[str, Any]:
    """Per node: class, error types, input names, dependent outputs."""
    return {
        node_id: (
            entry["class_type"],
            [e["type"] for e in entry["errors"]],
            [e["extra_info"].get("input_name") for e in entry["errors"]],
            entry["dependent_outputs"],
        )
        for node_id, entry in node_errors.items()
    }


def _without_tracebacks(body: dict[str, Any]) -> dict[str, Any]:
    # ComfyUI's traceback lists its own source lines; we have none to give.
    body = copy.deepcopy(body)
    for entry in body.get("node_errors", {}).values():
        for error in entry["errors"]:
            error["extra_info"].pop("traceback", None)
    return body


def test_every_captured_case_is_covered() -> None:
    assert len(CASES) == 20
    assert set(WORKFLOW_CASES) | HTTP_LAYER_CASES == set(CASES)


@pytest.mark.parametrize("name", WORKFLOW_CASES)
def test_status_and_error_type_match_comfyui(name: str, catalogue: Catalogue) -> None:
    case = CASES[name]
    expected = case["response"]
    verdict = _verdict(case, catalogue)
    assert verdict.http_status == expected["status"]
    assert verdict.accepted is (expected["status"] == 200)
    expected_error = expected["json"].get("error")
    if expected_error is None:
        assert "error" not in verdict.body
    else:
        assert verdict.body["error"]["type"] == expected_error["type"]


@pytest.mark.parametrize("name", WORKFLOW_CASES)
def test_node_errors_match_comfyui(name: str, catalogue: Catalogue) -> None:
    case = CASES[name]
    verdict = _verdict(case, catalogue)
    expected = case["response"]["json"]["node_errors"]
    assert _summary(verdict.node_errors) == _summary(expected)
    assert verdict.node_errors is verdict.body["node_errors"]


@pytest.mark.parametrize("name", WORKFLOW_CASES)
def test_whole_body_matches_comfyui_but_tracebacks(name: str, catalogue: Catalogue) -> None:
    """Messages, details and extra_info (input_config, received values) are reproduced."""
    case = CASES[name]
    response = case["response"]["json"]
    expected = {k: v for k, v in response.items() if k in ("error", "node_errors")}
    verdict = _verdict(case, catalogue)
    assert _without_tracebacks(verdict.body) == _without_tracebacks(expected)


@pytest.mark.parametrize(
    "name", [n for n in WORKFLOW_CASES if CASES[n]["response"]["status"] == 200]
)
def test_accepted_cases_run_the_outputs_comfyui_ran(name: str, catalogue: Catalogue) -> None:
    case = CASES[name]
    (history_entry,) = case["history"].values()
    outputs_to_execute = history_entry["prompt"][4]
    assert _verdict(case, catalogue).outputs_to_execute == outputs_to_execute


def test_inner_link_failure_carries_an_empty_traceback(catalogue: Catalogue) -> None:
    verdict = _verdict(CASES["link_to_nonexistent_node"], catalogue)
    (error,) = verdict.node_errors["2"]["errors"]
    assert error["extra_info"]["traceback"] == []
    assert error["extra_info"]["exception_type"] == "KeyError"


def test_malformed_json_body_never_reaches_the_validator() -> None:
    """ComfyUI answers 500 text/plain; parsing the body is the HTTP layer's job, not ours."""
    case = CASES["malformed_json_body"]
    assert case["response"]["status"] == 500
    with pytest.raises(json.JSONDecodeError):
        json.loads(case["request"]["raw_body"])


def test_missing_image_is_only_checked_when_input_files_are_known(catalogue: Catalogue) -> None:
    prompt = CASES["loadimage_missing_file"]["request"]["json"]["prompt"]
    assert validate_prompt(prompt, catalogue, input_files=None).accepted
    assert not validate_prompt(prompt, catalogue, input_files=["other.png"]).accepted
    prompt["1"]["inputs"]["image"] = "no_such_upload.png"
    assert validate_prompt(prompt, catalogue, input_files=["no_such_upload.png"]).accepted


def test_missing_checkpoint_is_accepted_when_the_job_brings_it(catalogue: Catalogue) -> None:
    prompt = CASES["missing_checkpoint_file"]["request"]["json"]["prompt"]
    brought = {"checkpoints": ["does_not_exist.safetensors"]}
    verdict = validate_prompt(prompt, catalogue, extra_models=brought)
    assert verdict.accepted and verdict.outputs_to_execute == ["4"]
    other_kind = validate_prompt(prompt, catalogue, extra_models={"loras": ["x.safetensors"]})
    assert not other_kind.accepted


def test_job_models_are_listed_in_the_not_in_list_error(catalogue: Catalogue) -> None:
    prompt = CASES["missing_checkpoint_file"]["request"]["json"]["prompt"]
    verdict = validate_prompt(prompt, catalogue, extra_models={"checkpoints": ["mine.ckpt"]})
    (error,) = verdict.node_errors["1"]["errors"]
    assert error["details"] == "ckpt_name: 'does_not_exist.safetensors' not in ['mine.ckpt']"
    assert error["extra_info"]["input_config"][0] == ["mine.ckpt"]
    # The catalogue's own config (the image bakes no checkpoint) is untouched by the job's files.
    again = validate_prompt(prompt, catalogue)
    assert again.node_errors["1"]["errors"][0]["extra_info"]["input_config"][0] == []


# --- Cases ComfyUI was not captured on: our documented decisions ---------------------------


_EMPTY_IMAGE = {"width": 8, "height": 8, "batch_size": 1, "color": 0}


def _chain(**invert_inputs: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": _EMPTY_IMAGE},
        "2": {"class_type": "ImageInvert", "inputs": invert_inputs, "_meta": {"title": "x"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
    }


@pytest.mark.parametrize("prompt", [[], "abc", 5, [["1", 0]]])
def test_a_prompt_that_is_not_an_object_is_invalid(prompt: Any, catalogue: Catalogue) -> None:
    verdict = validate_prompt(prompt, catalogue)
    assert (verdict.http_status, verdict.body["error"]["type"]) == (400, "invalid_prompt")
    assert verdict.node_errors == {}


def test_no_prompt_at_all_is_no_prompt(catalogue: Catalogue) -> None:
    verdict = validate_prompt(None, catalogue)
    assert verdict.body == CASES["no_prompt_key"]["response"]["json"]


def test_a_node_that_is_not_an_object_misses_its_class_type(catalogue: Catalogue) -> None:
    prompt = _chain(image=["1", 0])
    prompt["4"] = "EmptyImage"
    verdict = validate_prompt(prompt, catalogue)
    assert verdict.body["error"]["details"] == "Node ID '#4'"
    assert "missing the class_type" in verdict.body["error"]["message"]


def test_output_node_linking_nowhere_is_reported_under_itself(catalogue: Catalogue) -> None:
    prompt = _chain(image=["1", 0])
    prompt["3"]["inputs"]["images"] = ["42", 0]
    verdict = validate_prompt(prompt, catalogue)
    (error,) = verdict.node_errors["3"]["errors"]
    assert error["type"] == "exception_during_validation"
    assert error["details"] == "'42'"
    assert verdict.node_errors["3"]["dependent_outputs"] == ["3"]


def test_node_without_inputs_is_reported_through_its_consumer(catalogue: Catalogue) -> None:
    prompt = _chain()
    del prompt["2"]["inputs"]
    verdict = validate_prompt(prompt, catalogue)
    (error,) = verdict.node_errors["2"]["errors"]
    assert error["type"] == "exception_during_inner_validation"
    assert error["extra_info"]["input_name"] == "images"


@pytest.mark.parametrize("link", [["1"], ["1", 0, 0], []])
def test_a_link_that_is_not_a_pair_is_rejected(link: list[Any], catalogue: Catalogue) -> None:
    verdict = validate_prompt(_chain(image=link), catalogue)
    assert list(verdict.node_errors) == ["2"]
    assert [e["type"] for e in verdict.node_errors["2"]["errors"]] == ["bad_linked_input"]


def test_a_cycle_is_rejected_not_recursed_forever(catalogue: Catalogue) -> None:
    prompt = _chain(image=["4", 0])
    prompt["4"] = {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}}
    verdict = validate_prompt(prompt, catalogue)
    assert not verdict.accepted
    assert [e["type"] for e in verdict.node_errors["4"]["errors"]] == ["dependency_cycle"]


def test_a_deep_chain_needs_no_python_recursion(catalogue: Catalogue) -> None:
    depth = 5000
    prompt: dict[str, Any] = {
        "0": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        }
    }
    for i in range(1, depth):
        prompt[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    prompt["out"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [str(depth - 1), 0], "filename_prefix": "d"},
    }
    assert validate_prompt(prompt, catalogue).accepted
    prompt["0"]["inputs"]["width"] = 0
    verdict = validate_prompt(prompt, catalogue)
    assert list(verdict.node_errors) == ["0"]
    assert verdict.node_errors["0"]["dependent_outputs"] == ["out"]


def test_combo_input_in_the_newer_format_is_checked(catalogue: Catalogue) -> None:
    prompt = {
        "1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "3": {
            "class_type": "ImageUpscaleWithModel",
            "inputs": {"upscale_model": ["1", 0], "image": ["2", 0]},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "u"}},
    }
    verdict = validate_prompt(prompt, catalogue)
    (error,) = verdict.node_errors["1"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "model_name: '4x.pth' not in []"
    assert error["extra_info"]["input_config"][0] == "COMBO"
    brought = {"upscale_models": ["4x.pth"]}
    assert validate_prompt(prompt, catalogue, extra_models=brought).accepted
    other = validate_prompt(prompt, catalogue, extra_models={"upscale_models": ["2x.pth"]})
    (error,) = other.node_errors["1"]["errors"]
    assert error["details"] == "model_name: '4x.pth' not in ['2x.pth']"
    assert error["extra_info"]["input_config"][1]["options"] == ["2x.pth"]


def test_optional_inputs_are_checked_only_when_present(catalogue: Catalogue) -> None:
    prompt: dict[str, Any] = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5.safetensors", "type": "sd3"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["1", 0]}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }
    brought = {"text_encoders": ["t5.safetensors"]}
    assert validate_prompt(prompt, catalogue, extra_models=brought).accepted
    prompt["1"]["inputs"]["device"] = "tpu"
    verdict = validate_prompt(prompt, catalogue, extra_models=brought)
    assert [e["extra_info"]["input_name"] for e in verdict.node_errors["1"]["errors"]] == ["device"]


def test_wildcard_input_takes_any_link_and_unknown_extra_inputs_are_ignored(
    catalogue: Catalogue,
) -> None:
    prompt = _chain(image=["1", 0], not_an_input=123)
    prompt["4"] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    verdict = validate_prompt(prompt, catalogue)
    assert verdict.accepted and verdict.outputs_to_execute == ["3", "4"]


def test_images_baked_into_the_image_pass_the_file_check() -> None:
    object_info = json.loads((DATA / "object_info_used_nodes.json").read_text())
    object_info["LoadImage"]["input"]["required"]["image"][0] = ["example.png"]
    baked = Catalogue.from_object_info(object_info)
    prompt = copy.deepcopy(CASES["loadimage_missing_file"]["request"]["json"]["prompt"])
    prompt["1"]["inputs"]["image"] = "example.png"
    assert validate_prompt(prompt, baked, input_files=[]).accepted
    prompt["1"]["inputs"]["image"] = "upload.png"
    assert validate_prompt(prompt, baked, input_files="upload.png").accepted  # one name
    assert not validate_prompt(prompt, baked, input_files=["u"]).accepted
