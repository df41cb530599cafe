"""Properties of pre-flight validation and of the catalogue store, over generated workflows."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from comfyburst.preflight import Catalogue, InputSpec, validate_prompt
from comfyburst.preflight._catalogue import types_match
from comfyburst.preflight.catalogue_store import CATALOGUE_BLOB_NAME, CatalogueStore

DATA = Path(__file__).parent / "test_data" / "comfyui_api"
# The catalogue the package ships (the one copy of the captured /object_info).
CATALOGUE = Catalogue.load_default()
SETTINGS = settings(max_examples=60, deadline=None)
IMAGE_OPS = ("ImageInvert", "ImageBlur", "ImageScale")
# Unconnected nodes a mutation may link to: one IMAGE and one LATENT output.
DECOYS: dict[str, dict[str, Any]] = {
    "decoy_image": {"class_type": "EmptyImage", "inputs": {}},
    "decoy_latent": {"class_type": "EmptyLatentImage", "inputs": {}},
}


def _spec(class_type: str, input_name: str) -> InputSpec:
    class_spec = CATALOGUE.get(class_type)
    assert class_spec is not None
    return next(s for s in class_spec.inputs if s.name == input_name)


@st.composite
def literal_for(draw: st.DrawFn, spec: InputSpec) -> Any:
    """A valid literal for a number or combo input, within the catalogue's bounds."""
    if spec.options is not None:
        return draw(st.sampled_from(spec.options))
    low = spec.min if spec.min is not None else -(2**31)
    high = spec.max if spec.max is not None else 2**31
    if spec.type_name == "INT":
        return draw(st.integers(int(low), int(high)))
    return draw(st.floats(float(low), float(high), allow_nan=False))


@st.composite
def literals(draw: st.DrawFn, class_type: str) -> dict[str, Any]:
    """Valid values for every literal input of a class (links are left to the caller)."""
    class_spec = CATALOGUE.get(class_type)
    assert class_spec is not None
    values: dict[str, Any] = {}
    for spec in class_spec.inputs:
        if not spec.required:
            continue
        if spec.convert is not None or spec.options is not None:
            values[spec.name] = draw(literal_for(spec))
        elif spec.type_name == "STRING":
            values[spec.name] = draw(st.text(max_size=20))
    return values


@st.composite
def image_chains(draw: st.DrawFn) -> dict[str, Any]:
    """EmptyImage → random image ops → SaveImage, all values valid."""
    prompt: dict[str, Any] = {
        "0": {"class_type": "EmptyImage", "inputs": draw(literals("EmptyImage"))}
    }
    ops = draw(st.lists(st.sampled_from(IMAGE_OPS), max_size=8))
    for index, class_type in enumerate(ops, start=1):
        inputs = draw(literals(class_type)) | {"image": [str(index - 1), 0]}
        prompt[str(index)] = {"class_type": class_type, "inputs": inputs}
    save_inputs = {"images": [str(len(ops)), 0], "filename_prefix": "prop"}
    prompt["save"] = {"class_type": "SaveImage", "inputs": save_inputs}
    return prompt


CHECKPOINT_NAMES = st.from_regex(r"[a-z0-9_]{1,16}\.safetensors", fullmatch=True)


@st.composite
def txt2img_graphs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Checkpoint → two CLIP encodes → KSampler → VAEDecode → SaveImage; the job brings the ckpt."""
    ckpt = draw(CHECKPOINT_NAMES)
    sampler = draw(literals("KSampler")) | {
        "model": ["ckpt", 0],
        "positive": ["pos", 0],
        "negative": ["neg", 0],
        "latent_image": ["latent", 0],
    }
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "b", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": draw(literals("EmptyLatentImage"))},
        "sampler": {"class_type": "KSampler", "inputs": sampler},
        "decode": {
            "class_type": "VAEDecode",
            "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]},
        },
        "save": {
            "class_type": "SaveImage",
            "inputs": {"images": ["decode", 0], "filename_prefix": "t"},
        },
    }
    return prompt, {"checkpoints": [ckpt]}


@st.composite
def any_valid_graph(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, list[str]]]:
    if draw(st.booleans()):
        return draw(image_chains()), {}
    return draw(txt2img_graphs())


def _just_outside(spec: InputSpec, below: bool) -> Any:
    bound = spec.min if below else spec.max
    assert bound is not None
    if spec.type_name == "INT":
        return int(bound) - 1 if below else int(bound) + 1
    return math.nextafter(float(bound), -math.inf if below else math.inf)


@st.composite
def mutated_graphs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, list[str]], str, str, str]:
    """A valid graph with one fault; returns it with (node_id, input_name, expected error)."""
    prompt, extra = draw(any_valid_graph())
    prompt = copy.deepcopy(prompt) | copy.deepcopy(DECOYS)
    targets = []
    for node_id, node in prompt.items():
        if node_id in DECOYS:
            continue
        class_spec = CATALOGUE.get(node["class_type"])
        assert class_spec is not None
        for spec in class_spec.inputs:
            if spec.name not in node["inputs"]:
                continue
            targets.append((node_id, spec, "required_input_missing"))
            value = node["inputs"][spec.name]
            if isinstance(value, list):
                targets.append((node_id, spec, "return_type_mismatch"))
            elif spec.options is not None:
                targets.append((node_id, spec, "value_not_in_list"))
            else:
                if spec.min is not None:
                    targets.append((node_id, spec, "value_smaller_than_min"))
                if spec.max is not None:
                    targets.append((node_id, spec, "value_bigger_than_max"))
    node_id, spec, error_type = draw(st.sampled_from(targets))
    inputs = prompt[node_id]["inputs"]
    if error_type == "required_input_missing":
        del inputs[spec.name]
    elif error_type == "return_type_mismatch":
        decoy = next(d for d in DECOYS if not types_match(_decoy_type(d), spec.type_name))
        inputs[spec.name] = [decoy, 0]
    elif error_type == "value_not_in_list":
        choices = set(spec.options or ()) | {n for names in extra.values() for n in names}
        inputs[spec.name] = draw(st.text(min_size=1).filter(lambda t: t not in choices))
    else:
        inputs[spec.name] = _just_outside(spec, below=error_type == "value_smaller_than_min")
    return prompt, extra, node_id, spec.name, error_type


def _decoy_type(decoy_id: str) -> str:
    class_spec = CATALOGUE.get(DECOYS[decoy_id]["class_type"])
    assert class_spec is not None
    return class_spec.outputs[0]


@SETTINGS
@given(any_valid_graph())
def test_valid_graphs_are_accepted(graph: tuple[dict[str, Any], dict[str, list[str]]]) -> None:
    prompt, extra = graph
    before = copy.deepcopy(prompt)
    verdict = validate_prompt(prompt, CATALOGUE, extra_models=extra)
    assert verdict.accepted, verdict.node_errors
    assert (verdict.http_status, verdict.body) == (200, {"node_errors": {}})
    assert verdict.outputs_to_execute == ["save"]
    assert prompt == before  # validation never rewrites the workflow


@SETTINGS
@given(txt2img_graphs())
def test_the_checkpoint_is_only_allowed_when_brought(
    graph: tuple[dict[str, Any], dict[str, list[str]]],
) -> None:
    prompt, _ = graph
    verdict = validate_prompt(prompt, CATALOGUE)
    assert not verdict.accepted
    (error,) = verdict.node_errors["ckpt"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == ("value_not_in_list", "ckpt_name")


@SETTINGS
@given(mutated_graphs())
def test_one_mutation_is_rejected_on_the_right_node(
    case: tuple[dict[str, Any], dict[str, list[str]], str, str, str],
) -> None:
    prompt, extra, node_id, input_name, error_type = case
    verdict = validate_prompt(prompt, CATALOGUE, extra_models=extra)
    assert (verdict.accepted, verdict.http_status) == (False, 400)
    assert verdict.body["error"]["type"] == "prompt_outputs_failed_validation"
    assert list(verdict.node_errors) == [node_id]
    (error,) = verdict.node_errors[node_id]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == (error_type, input_name)
    assert verdict.node_errors[node_id]["dependent_outputs"] == ["save"]
    assert verdict.node_errors[node_id]["class_type"] == prompt[node_id]["class_type"]


@SETTINGS
@given(image_chains(), st.data())
def test_numeric_strings_are_coerced(prompt: dict[str, Any], data: st.DataObject) -> None:
    inputs = prompt["0"]["inputs"]
    name = data.draw(st.sampled_from(sorted(inputs)))
    inputs[name] = str(inputs[name])
    assert validate_prompt(prompt, CATALOGUE).accepted


# --- The catalogue store ------------------------------------------------------------------


def _tiny_catalogue_json(class_name: str) -> bytes:
    entry = {"input": {"required": {}}, "output": [], "output_node": True}
    return json.dumps({class_name: entry}).encode()


DEFAULT = Catalogue.from_json_bytes(_tiny_catalogue_json("Default"))


class FakeBlobs:
    """One bucket in memory; counts reads so tests can see what the store re-reads."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[int, bytes]] = {}
        self.byte_reads = 0
        self.next_generation = 1

    def put(self, name: str, data: bytes) -> int:
        generation = self.next_generation
        self.next_generation += 1
        self.objects[name] = (generation, data)
        return generation

    def read_bytes(self, bucket: str, name: str) -> bytes | None:
        assert bucket == "jobs-bucket"
        self.byte_reads += 1
        found = self.objects.get(name)
        return None if found is None else found[1]

    def generation(self, bucket: str, name: str) -> int | None:
        assert bucket == "jobs-bucket"
        found = self.objects.get(name)
        return None if found is None else found[0]


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.floats(0, 25)),
        st.tuples(st.just("upload"), st.booleans()),  # True: a valid catalogue
        st.tuples(st.just("delete"), st.none()),
    ),
    max_size=30,
)


@SETTINGS
@given(STEPS)
def test_store_serves_the_last_valid_blob_seen_at_a_check(steps: list[tuple[str, Any]]) -> None:
    blobs = FakeBlobs()
    store = CatalogueStore(blobs, "jobs-bucket", check_interval_s=10, default=lambda: DEFAULT)
    now, last_check = 0.0, None
    expected, served_generation, rejected_generation = "Default", None, None
    for action, arg in steps:
        if action == "wait":
            now += arg
        elif action == "upload":
            generation = blobs.next_generation
            body = _tiny_catalogue_json(f"Gen{generation}") if arg else b"{not json"
            blobs.put(CATALOGUE_BLOB_NAME, body)
        else:
            blobs.objects.pop(CATALOGUE_BLOB_NAME, None)
        reads_before = blobs.byte_reads
        catalogue = store.get(now)
        if last_check is None or now - last_check >= 10:
            last_check = now
            current = blobs.objects.get(CATALOGUE_BLOB_NAME)
            if current is None:
                expected, served_generation = "Default", None
            elif current[0] not in (served_generation, rejected_generation):
                assert blobs.byte_reads == reads_before + 1
                if current[1].startswith(b"{not"):
                    rejected_generation = current[0]
                else:
                    expected, served_generation = f"Gen{current[0]}", current[0]
        assert blobs.byte_reads <= reads_before + 1
        assert list(catalogue) == [expected]
        assert store.generation == served_generation


def test_store_keeps_serving_when_storage_fails() -> None:
    class Broken(FakeBlobs):
        def generation(self, bucket: str, name: str) -> int | None:
            raise ConnectionError("storage down")

    blobs = Broken()
    store = CatalogueStore(blobs, "jobs-bucket", check_interval_s=1, default=lambda: DEFAULT)
    assert list(store.get(0.0)) == ["Default"]
    assert blobs.byte_reads == 0


def test_store_default_is_the_checked_in_catalogue() -> None:
    store = CatalogueStore(FakeBlobs(), "jobs-bucket")
    catalogue = store.get(0.0)
    assert catalogue is Catalogue.load_default()
    assert "KSampler" in catalogue and len(catalogue) == len(CATALOGUE)
