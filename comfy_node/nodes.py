"""The ComfyBurst nodes: run a workflow or a txt2img graph on a ComfyBurst GPU."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from . import _comfy
from ._vendor.comfyburst_core.client import ApiClient
from ._vendor.comfyburst_core.schema import JobRequest, ModelKind
from .config import make_client
from .graph import LoraRef, Txt2ImgParams, bind_input_images, build_txt2img
from .local_models import HASH_CACHE_FILE_NAME, HashCache, bring_local_models
from .outputs import SavedOutputs, save_files
from .remote import PROGRESS_STEPS, RemoteJobCancelled, run_job
from .tensors import decode_batch, encode_png, is_image_name, to_tensor

CATEGORY = "ComfyBurst"
MODELS_TYPE = "COMFYBURST_MODELS"
LORAS_TYPE = "COMFYBURST_LORAS"


def _model_entry(kind: str, url: str, filename: str, sha256: str) -> dict[str, Any]:
    name = filename.strip() or Path(url.split("?", 1)[0]).name
    entry: dict[str, Any] = {"kind": kind, "url": url.strip(), "filename": name}
    if sha256.strip():
        entry["sha256"] = sha256.strip()
    return entry


ENVIRONMENT_TOOLTIP = (
    "The GPU environment of custom-node packs to run in (env-…); empty: the packs of the node "
    "types the GPU image lacks, built the first time"
)
GPU_CLASS_TOOLTIP = "The GPU class to run on (comfyburst gpu-classes); empty: the default"


def _class_option(gpu_class: str) -> dict[str, str]:
    """`options.gpu_class` when one is named (the API refuses an unknown one)."""
    name = gpu_class.strip()
    return {"gpu_class": name} if name else {}


def _request_hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def execute(request: dict[str, Any], client: ApiClient | None = None) -> tuple[Any, ...]:
    """Validate locally, run remotely; (IMAGE batch or None, result JSON, saved file paths,
    VIDEO or None, AUDIO or None). Every file but the images is saved to the output folder."""
    JobRequest.model_validate(request)  # a clear error before any network call
    report = _comfy.progress_reporter(PROGRESS_STEPS)
    client = client or make_client()
    request = _with_local_models(client, request, report)
    try:
        result = run_job(
            client,
            request,
            is_image=is_image_name,
            on_progress=report,
            interrupted=_comfy.interrupt_requested,
            on_preview=_comfy.preview_reporter(PROGRESS_STEPS),
            on_status=_comfy.status_reporter(),
        )
    except RemoteJobCancelled:
        _comfy.raise_if_interrupted()
        raise
    job_id = result.job["job_id"]
    if not result.images and not result.files:
        raise RuntimeError(f"ComfyBurst job {job_id} returned no outputs")
    out_dir = _comfy.output_directory()
    saved = SavedOutputs()
    if out_dir is not None:
        saved = save_files(Path(out_dir) / "comfyburst" / job_id, result.files)
    images = to_tensor(decode_batch([data for _, data in result.images])) if result.images else None
    video_path, audio_path = saved.first("video"), saved.first("audio")
    video = _comfy.video_from_file(str(video_path)) if video_path else None
    audio = _comfy.audio_from_file(str(audio_path)) if audio_path else None
    paths = "\n".join(str(path) for path in saved.all_paths())
    return images, json.dumps(result.job, indent=2), paths, video, audio


def _with_local_models(client: ApiClient, request: dict[str, Any], report: Any) -> dict[str, Any]:
    """The request naming, and the models bucket holding, every local model file the GPU
    side lacks; the upload moves the node's progress bar."""
    user_dir = _comfy.user_directory()
    hashes = HashCache(Path(user_dir) / HASH_CACHE_FILE_NAME if user_dir else None)
    brought, _sent = bring_local_models(
        client,
        request,
        find_local=_comfy.local_model_file,
        hashes=hashes,
        on_progress=lambda done, total: report(done * PROGRESS_STEPS // max(total, 1)),
    )
    return brought


class ComfyBurstModelFromURL:
    """Adds one model file (URL, kind, optional sha256) to a models list."""

    CATEGORY = CATEGORY
    FUNCTION = "add"
    RETURN_TYPES = (MODELS_TYPE,)
    RETURN_NAMES = ("models",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "kind": ([k.value for k in ModelKind], {"default": "checkpoints"}),
                "url": ("STRING", {"default": "https://huggingface.co/"}),
            },
            "optional": {
                "filename": ("STRING", {"default": ""}),
                "sha256": ("STRING", {"default": ""}),
                "models": (MODELS_TYPE,),
            },
        }

    def add(
        self, kind: str, url: str, filename: str = "", sha256: str = "", models: list | None = None
    ) -> tuple[list[dict[str, Any]]]:
        return ([*(models or []), _model_entry(kind, url, filename, sha256)],)


class ComfyBurstLoraFromURL:
    """Adds a LoRA (URL and strengths) for the GPU txt2img node."""

    CATEGORY = CATEGORY
    FUNCTION = "add"
    RETURN_TYPES = (LORAS_TYPE,)
    RETURN_NAMES = ("loras",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        strength = {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}
        return {
            "required": {
                "url": ("STRING", {"default": "https://civitai.com/api/download/models/"}),
                "strength_model": ("FLOAT", strength),
                "strength_clip": ("FLOAT", strength),
            },
            "optional": {
                "filename": ("STRING", {"default": ""}),
                "sha256": ("STRING", {"default": ""}),
                "loras": (LORAS_TYPE,),
            },
        }

    def add(
        self,
        url: str,
        strength_model: float,
        strength_clip: float,
        filename: str = "",
        sha256: str = "",
        loras: list | None = None,
    ) -> tuple[list[dict[str, Any]]]:
        entry = _model_entry("loras", url, filename, sha256)
        entry["strength_model"], entry["strength_clip"] = strength_model, strength_clip
        return ([*(loras or []), entry],)


class ComfyBurstRunWorkflow:
    """Runs a whole API-format workflow on a ComfyBurst GPU and returns its images."""

    CATEGORY = CATEGORY
    FUNCTION = "run"
    # VIDEO and AUDIO are None where the job made none (or this ComfyUI lacks the type);
    # their files are saved either way and listed in saved_files.
    RETURN_TYPES = ("IMAGE", "STRING", "STRING", "VIDEO", "AUDIO")
    RETURN_NAMES = ("images", "result_json", "saved_files", "video", "audio")
    # Runs when queued even with nothing connected: what it brings back is saved as it arrives.
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"workflow": ("STRING", {"multiline": True, "default": "{}"})},
            "optional": {
                "workflow_file": ("STRING", {"default": ""}),
                "models": (MODELS_TYPE,),
                "images": ("IMAGE",),
                "image_targets": ("STRING", {"default": ""}),
                "timeout_s": ("INT", {"default": 1800, "min": 10, "max": 86400}),
                "gpu_class": ("STRING", {"default": "", "tooltip": GPU_CLASS_TOOLTIP}),
                "environment": ("STRING", {"default": "", "tooltip": ENVIRONMENT_TOOLTIP}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> str:
        # A workflow file edited in place changes the job, though its name does not.
        name = str(kwargs.get("workflow_file") or "").strip()
        base = _comfy.input_directory()
        content = None
        if name and base is not None and (Path(base) / name).is_file():
            content = hashlib.sha256((Path(base) / name).read_bytes()).hexdigest()
        return _request_hash(kwargs, content)

    def build_request(
        self,
        workflow: str,
        workflow_file: str = "",
        models: list | None = None,
        images: Any = None,
        image_targets: str = "",
        timeout_s: int = 1800,
        gpu_class: str = "",
        environment: str = "",
    ) -> dict[str, Any]:
        text = workflow
        if workflow_file.strip():
            base = _comfy.input_directory()
            if base is None:
                raise ValueError("workflow_file needs ComfyUI's input folder")
            path = (Path(base) / workflow_file).resolve()
            if Path(base).resolve() not in path.parents:
                raise ValueError(f"workflow_file {workflow_file!r} is outside the input folder")
            text = path.read_text(encoding="utf-8")
        try:
            graph = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"workflow is not JSON: {exc.msg} at line {exc.lineno}") from exc
        if not isinstance(graph, dict) or not graph:
            raise ValueError("workflow must be an API-format JSON object of nodes (Save (API))")
        inputs = []
        if images is not None:
            pngs = encode_png(images)
            names = [f"comfyburst_input_{i}.png" for i in range(len(pngs))]
            targets = [t.strip() for t in image_targets.split(",") if t.strip()] or None
            graph = bind_input_images(graph, names, targets)
            inputs = [
                {"name": n, "data_b64": base64.b64encode(p).decode()}
                for n, p in zip(names, pngs, strict=True)
            ]
        return {
            "workflow": graph,
            "models": [
                {k: v for k, v in m.items() if not k.startswith("strength")} for m in models or []
            ],
            "inputs": inputs,
            "options": {
                "timeout_s": timeout_s,
                **_class_option(gpu_class),
                **({"environment": environment.strip()} if environment.strip() else {}),
            },
        }

    def run(self, workflow: str, **optional: Any) -> tuple[Any, ...]:
        return execute(self.build_request(workflow, **optional))


class ComfyBurstTxt2Img:
    """Builds checkpoint → KSampler → VAE decode from its widgets and runs it on a GPU."""

    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "result_json")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "checkpoint_url": ("STRING", {"default": "https://huggingface.co/"}),
                "prompt": ("STRING", {"multiline": True, "default": ""}),
                "negative": ("STRING", {"multiline": True, "default": ""}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1}),
                "sampler_name": (_comfy.sampler_names(),),
                "scheduler": (_comfy.scheduler_names(),),
                "width": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                "height": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            },
            "optional": {
                "checkpoint_sha256": ("STRING", {"default": ""}),
                "loras": (LORAS_TYPE,),
                "gpu_class": ("STRING", {"default": "", "tooltip": GPU_CLASS_TOOLTIP}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> str:
        return _request_hash(kwargs)

    def build_request(
        self,
        checkpoint_url: str,
        checkpoint_sha256: str = "",
        loras: list | None = None,
        gpu_class: str = "",
        **widgets: Any,
    ) -> dict[str, Any]:
        checkpoint = _model_entry("checkpoints", checkpoint_url, "", checkpoint_sha256)
        lora_models = [
            {k: v for k, v in lora.items() if not k.startswith("strength")} for lora in loras or []
        ]
        params = Txt2ImgParams(
            checkpoint=checkpoint["filename"],
            loras=tuple(
                LoraRef(lora["filename"], lora["strength_model"], lora["strength_clip"])
                for lora in loras or []
            ),
            **widgets,
        )
        request = {"workflow": build_txt2img(params), "models": [checkpoint, *lora_models]}
        options = _class_option(gpu_class)
        return {**request, "options": options} if options else request

    def run(self, checkpoint_url: str, **kwargs: Any) -> tuple[Any, str]:
        images, result_json, *_ = execute(self.build_request(checkpoint_url, **kwargs))
        if images is None:
            raise RuntimeError("the GPU txt2img job returned no images")
        return images, result_json


NODE_CLASS_MAPPINGS = {
    "ComfyBurstRunWorkflow": ComfyBurstRunWorkflow,
    "ComfyBurstTxt2Img": ComfyBurstTxt2Img,
    "ComfyBurstModelFromURL": ComfyBurstModelFromURL,
    "ComfyBurstLoraFromURL": ComfyBurstLoraFromURL,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ComfyBurstRunWorkflow": "Run workflow on GPU (ComfyBurst)",
    "ComfyBurstTxt2Img": "GPU txt2img (ComfyBurst)",
    "ComfyBurstModelFromURL": "Model from URL (ComfyBurst)",
    "ComfyBurstLoraFromURL": "LoRA from URL (ComfyBurst)",
}
