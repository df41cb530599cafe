"""Which combo inputs name model files, and in which model folder kind they live."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_TEXT_ENCODERS = ("clip", "text_encoders")
_DIFFUSION_MODELS = ("unet", "diffusion_models")

# Keys are an input name (applies to that combo input on every node class) or a
# (class_type, input_name) pair (applies to that node class only, and wins over the input name).
# Values are the model folder kinds whose files the input may name; a job's `extra_models[kind]`
# filenames are added to the allowed values of every combo input mapped to that kind.
# The pair form exists for input names too generic to map everywhere: `model_name` is an
# upscale model on UpscaleModelLoader but a model version on the API nodes, and `clip_name` is a
# CLIP vision model on CLIPVisionLoader but a text encoder on CLIPLoader.
# `clip`/`text_encoders` and `unet`/`diffusion_models` are the legacy and current names of the
# same folders, so either kind in a job counts. `embeddings` has no combo input (embeddings are
# named inside prompt text), so files of that kind never change what validates.
MODEL_INPUT_KINDS: Mapping[str | tuple[str, str], tuple[str, ...]] = MappingProxyType(
    {
        "ckpt_name": ("checkpoints",),
        "lora_name": ("loras",),
        "vae_name": ("vae",),
        "control_net_name": ("controlnet",),
        "unet_name": _DIFFUSION_MODELS,
        "clip_name": _TEXT_ENCODERS,
        "clip_name1": _TEXT_ENCODERS,
        "clip_name2": _TEXT_ENCODERS,
        "clip_name3": _TEXT_ENCODERS,
        "clip_name4": _TEXT_ENCODERS,
        "style_model_name": ("style_models",),
        "hypernetwork_name": ("hypernetworks",),
        "gligen_name": ("gligen",),
        "photomaker_model_name": ("photomaker",),
        "audio_encoder_name": ("audio_encoders",),
        ("UpscaleModelLoader", "model_name"): ("upscale_models",),
        ("CLIPVisionLoader", "clip_name"): ("clip_vision",),
        ("CheckpointLoader", "config_name"): ("configs",),
        ("ModelPatchLoader", "name"): ("model_patches",),
    }
)


def model_kinds_for(class_type: str, input_name: str) -> tuple[str, ...]:
    """The model folder kinds a combo input draws its files from; () when it names no model."""
    kinds = MODEL_INPUT_KINDS.get((class_type, input_name))
    if kinds is None:
        kinds = MODEL_INPUT_KINDS.get(input_name, ())
    return kinds
