"""Build the standard txt2img API-format workflow from widget values (pure, no ComfyUI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoraRef:
    """A LoRA file (already named in the job's models) and its strengths."""

    filename: str
    strength_model: float = 1.0
    strength_clip: float = 1.0


@dataclass(frozen=True)
class Txt2ImgParams:
    checkpoint: str
    prompt: str
    negative: str = ""
    seed: int = 0
    steps: int = 20
    cfg: float = 7.0
    sampler_name: str = "euler"
    scheduler: str = "normal"
    width: int = 512
    height: int = 512
    batch_size: int = 1
    loras: tuple[LoraRef, ...] = ()
    filename_prefix: str = "ComfyBurst"


def _link(node_id: str, index: int) -> list[Any]:
    return [node_id, index]


def build_txt2img(params: Txt2ImgParams) -> dict[str, dict[str, Any]]:
    """checkpoint → (LoRAs) → CLIP encode ± → empty latent → KSampler → VAE decode → save."""
    workflow: dict[str, dict[str, Any]] = {
        "ckpt": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": params.checkpoint},
        }
    }
    model, clip = _link("ckpt", 0), _link("ckpt", 1)
    for index, lora in enumerate(params.loras):
        node_id = f"lora{index}"
        workflow[node_id] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": lora.filename,
                "strength_model": lora.strength_model,
                "strength_clip": lora.strength_clip,
            },
        }
        model, clip = _link(node_id, 0), _link(node_id, 1)
    workflow["positive"] = {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": params.prompt, "clip": clip},
    }
    workflow["negative"] = {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": params.negative, "clip": clip},
    }
    workflow["latent"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": params.width, "height": params.height, "batch_size": params.batch_size},
    }
    workflow["sampler"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "seed": params.seed,
            "steps": params.steps,
            "cfg": params.cfg,
            "sampler_name": params.sampler_name,
            "scheduler": params.scheduler,
            "positive": _link("positive", 0),
            "negative": _link("negative", 0),
            "latent_image": _link("latent", 0),
            "denoise": 1.0,
        },
    }
    workflow["decode"] = {
        "class_type": "VAEDecode",
        "inputs": {"samples": _link("sampler", 0), "vae": _link("ckpt", 2)},
    }
    workflow["save"] = {
        "class_type": "SaveImage",
        "inputs": {"images": _link("decode", 0), "filename_prefix": params.filename_prefix},
    }
    return workflow


def bind_input_images(
    workflow: dict[str, dict[str, Any]], names: list[str], targets: list[str] | None
) -> dict[str, dict[str, Any]]:
    """Point LoadImage nodes at uploaded input names: the given node ids, else every LoadImage
    in id order. Raises ValueError when the counts do not match."""
    load_ids = targets or sorted(
        (nid for nid, node in workflow.items() if node.get("class_type") == "LoadImage"),
        key=lambda nid: (len(nid), nid),
    )
    if len(load_ids) != len(names):
        raise ValueError(
            f"{len(names)} input image(s) for {len(load_ids)} LoadImage node(s) "
            f"({', '.join(load_ids) or 'none'}); name the targets with image_targets"
        )
    bound = {
        nid: {**node, "inputs": dict(node.get("inputs", {}))} for nid, node in workflow.items()
    }
    for node_id, name in zip(load_ids, names, strict=True):
        if node_id not in bound:
            raise ValueError(f"image target {node_id!r} is not a node of the workflow")
        if bound[node_id].get("class_type") != "LoadImage":
            raise ValueError(
                f"image target {node_id!r} is a {bound[node_id].get('class_type')}, not LoadImage"
            )
        bound[node_id]["inputs"]["image"] = name
    return bound
