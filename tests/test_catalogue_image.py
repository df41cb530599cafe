"""The shipped node catalogue is the GPU image's `/object_info`: the image's pins (torchaudio
2.8.0 imports, so the audio nodes load), core ComfyUI only, and no model file of any machine."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from comfyburst.preflight import Catalogue

# Node types that load only when torchaudio imports (ComfyUI 0.3.64 with torchaudio 2.8.0).
AUDIO_TYPES = {
    "AudioAdjustVolume", "AudioConcat", "AudioEncoderEncode", "AudioEncoderLoader", "AudioMerge",
    "ConditioningStableAudio", "EmptyAudio", "EmptyLatentAudio", "LoadAudio", "PreviewAudio",
    "RecordAudio", "SaveAudio", "SaveAudioMP3", "SaveAudioOpus", "SplitAudioChannels",
    "TrimAudioDuration", "VAEDecodeAudio", "VAEEncodeAudio",
}  # fmt: skip
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")
# ComfyUI's own folder of model configs (yaml files in its repository), not a model.
SHIPPED_WITH_COMFYUI = {"configs"}


def _raw() -> dict[str, Any]:
    data = resources.files("comfyburst.preflight").joinpath("data/object_info.json")
    return dict(json.loads(data.read_bytes()))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


def test_the_audio_nodes_of_the_images_torchaudio_are_listed() -> None:
    catalogue = Catalogue.load_default()
    assert AUDIO_TYPES - set(catalogue) == set()
    assert catalogue.get("SaveAudio").output_node  # type: ignore[union-attr]


def test_no_model_input_offers_a_file_the_image_does_not_bake() -> None:
    catalogue = Catalogue.load_default()
    # VAELoader's built-in "pixel_space" is an option, not a file: files have a suffix.
    offered = {
        (name, spec.name): files
        for name in catalogue
        for spec in catalogue.get(name).inputs  # type: ignore[union-attr]
        if spec.model_kinds and not set(spec.model_kinds) & SHIPPED_WITH_COMFYUI
        for files in [[o for o in spec.options or () if "." in str(o)]]
        if files
    }
    assert offered == {}
    # Nor anywhere else in the document (a combo not mapped to a model kind).
    stray = [s for s in _strings(_raw()) if s.lower().endswith(MODEL_SUFFIXES)]
    assert stray == []


def test_only_core_comfyui_nodes_are_listed() -> None:
    """The image bakes no custom node by default (gpu_image/custom_nodes.txt); ours never runs
    there, so a capture from a ComfyUI with the ComfyBurst nodes loaded is refused."""
    raw = _raw()
    assert not [name for name in raw if name.startswith("ComfyBurst")]
    assert {entry["python_module"].split(".")[0] for entry in raw.values()} <= {
        "nodes", "comfy_extras", "comfy_api_nodes", "custom_nodes"
    }  # fmt: skip
    assert 490 <= len(raw) <= 500
