"""Pre-flight refuses file values that could reach another job's files on a shared VM:
annotated, absolute, traversing or separated names, and files of folders other than input."""

from __future__ import annotations

from typing import Any

import pytest

from comfyburst.preflight import Catalogue, validate_prompt


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load_default()


def _prompt(image: Any, *, loader: str = "LoadImage") -> dict[str, Any]:
    return {
        "1": {"class_type": loader, "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }


HOSTILE = [
    "photo.png [output]",
    "photo.png [temp]",
    "photo.png [input]",
    "photo.png[output]",  # ComfyUI matches the annotation without the space
    "/etc/passwd",
    "../photo.png",
    "comfyburst/0123456789abcdef0123456789abcdef/photo.png",
    "sub\\\\photo.png",
    "C:photo.png",
    "..",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("input_files", [None, [], ["photo.png"]])
def test_hostile_file_values_are_refused(
    catalogue: Catalogue, value: str, input_files: list[str] | None
) -> None:
    verdict = validate_prompt(_prompt(value), catalogue, input_files=input_files)
    assert not verdict.accepted
    (error,) = verdict.node_errors["1"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert "File not available to this job" in error["details"]


def test_the_jobs_own_upload_is_accepted(catalogue: Catalogue) -> None:
    verdict = validate_prompt(_prompt("photo.png"), catalogue, input_files=["photo.png"])
    assert verdict.accepted and verdict.outputs_to_execute == ["2"]


def test_files_of_the_output_folder_are_refused(catalogue: Catalogue) -> None:
    spec = catalogue.get("LoadImageOutput")
    if spec is None:
        pytest.skip("the catalogue has no LoadImageOutput node")
    verdict = validate_prompt(
        _prompt("ComfyUI_00001_.png", loader="LoadImageOutput"), catalogue, input_files=[]
    )
    assert not verdict.accepted
    assert verdict.node_errors["1"]["errors"][0]["type"] == "custom_validation_failed"


def test_a_refused_side_branch_leaves_the_other_output_accepted(catalogue: Catalogue) -> None:
    prompt = _prompt("photo.png [output]")
    prompt["3"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    }
    prompt["4"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["3", 0], "filename_prefix": "y"},
    }
    verdict = validate_prompt(prompt, catalogue, input_files=[])
    assert verdict.accepted and verdict.outputs_to_execute == ["4"]
    assert verdict.node_errors["1"]["dependent_outputs"] == ["2"]
