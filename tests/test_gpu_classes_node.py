"""The node's optional gpu_class input: named, it becomes options.gpu_class (validated by the
schema as the API will); empty, the job takes the deployment's default class."""

from __future__ import annotations

import json

import pytest

from comfy_node.nodes import ComfyBurstRunWorkflow, ComfyBurstTxt2Img
from comfyburst.schema import JobRequest

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}}
TXT2IMG = {
    "prompt": "p",
    "negative": "",
    "seed": 1,
    "steps": 2,
    "cfg": 7.0,
    "sampler_name": "euler",
    "scheduler": "normal",
    "width": 64,
    "height": 64,
    "batch_size": 1,
}
URL = "https://huggingface.co/x/resolve/main/tiny.safetensors"


@pytest.mark.parametrize("node", [ComfyBurstRunWorkflow, ComfyBurstTxt2Img])
def test_the_input_is_optional_text(node: type) -> None:
    kind, spec = node.INPUT_TYPES()["optional"]["gpu_class"]
    assert kind == "STRING" and spec["default"] == ""


def test_run_workflow_names_the_class_in_its_options() -> None:
    node = ComfyBurstRunWorkflow()
    request = node.build_request(json.dumps(WORKFLOW), timeout_s=60, gpu_class=" l4-spot ")
    assert request["options"] == {"timeout_s": 60, "gpu_class": "l4-spot"}
    assert JobRequest.model_validate(request).options.gpu_class == "l4-spot"
    assert node.build_request(json.dumps(WORKFLOW), gpu_class="")["options"] == {"timeout_s": 1800}


def test_txt2img_names_the_class_only_when_given() -> None:
    named = ComfyBurstTxt2Img().build_request(URL, gpu_class="l4", **TXT2IMG)
    assert named["options"] == {"gpu_class": "l4"}
    assert "options" not in ComfyBurstTxt2Img().build_request(URL, **TXT2IMG)


def test_a_malformed_class_fails_the_schema_before_any_call() -> None:
    request = ComfyBurstRunWorkflow().build_request(json.dumps(WORKFLOW), gpu_class="L4 Spot")
    with pytest.raises(ValueError, match="gpu_class"):
        JobRequest.model_validate(request)
