"""The ComfyUI node package without ComfyUI: metadata, graph builder, tensors, config, wiring."""

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import comfy_node
from comfy_node import _comfy, config, outputs, remote, routes
from comfy_node._vendor.comfyburst_core.client import ApiError
from comfy_node._vendor.comfyburst_core.errors import SettingsError
from comfy_node.graph import LoraRef, Txt2ImgParams, bind_input_images, build_txt2img
from comfy_node.nodes import ComfyBurstRunWorkflow, ComfyBurstTxt2Img
from comfy_node.tensors import decode_batch, encode_png, to_tensor


def _png(color: tuple[int, int, int], size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_package_exports_only_the_comfy_mappings() -> None:
    assert set(comfy_node.__all__) == {
        "NODE_CLASS_MAPPINGS",
        "NODE_DISPLAY_NAME_MAPPINGS",
        "WEB_DIRECTORY",
    }
    assert set(comfy_node.NODE_CLASS_MAPPINGS) == set(comfy_node.NODE_DISPLAY_NAME_MAPPINGS)
    assert (Path(comfy_node.__file__).parent / comfy_node.WEB_DIRECTORY / "comfyburst.js").exists()


@pytest.mark.parametrize("name", sorted(comfy_node.NODE_CLASS_MAPPINGS))
def test_node_metadata_is_what_comfyui_expects(name: str) -> None:
    cls = comfy_node.NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    assert callable(getattr(cls(), cls.FUNCTION))
    assert cls.CATEGORY == "ComfyBurst"


def test_txt2img_sampler_lists_come_from_comfyui_catalogue() -> None:
    required = ComfyBurstTxt2Img.INPUT_TYPES()["required"]
    assert "euler" in required["sampler_name"][0]
    assert "karras" in required["scheduler"][0]


def test_txt2img_graph_links_and_loras() -> None:
    graph = build_txt2img(
        Txt2ImgParams(
            checkpoint="m.safetensors",
            prompt="a cat",
            negative="blurry",
            seed=7,
            steps=4,
            loras=(LoraRef("a.safetensors", 0.5, 0.25), LoraRef("b.safetensors")),
        )
    )
    assert graph["lora0"]["inputs"]["model"] == ["ckpt", 0]
    assert graph["lora1"]["inputs"]["model"] == ["lora0", 0]
    assert graph["sampler"]["inputs"]["model"] == ["lora1", 0]
    assert graph["positive"]["inputs"] == {"text": "a cat", "clip": ["lora1", 1]}
    assert graph["decode"]["inputs"]["vae"] == ["ckpt", 2]
    assert graph["save"]["class_type"] == "SaveImage"
    assert graph["lora0"]["inputs"]["strength_clip"] == 0.25


def test_txt2img_graph_passes_preflight_with_its_models() -> None:
    preflight = pytest.importorskip("comfyburst.preflight", reason="pre-flight package not built")
    request = ComfyBurstTxt2Img().build_request(
        "https://huggingface.co/x/resolve/main/tiny.safetensors",
        loras=[
            {
                "kind": "loras",
                "url": "https://civitai.com/d/1",
                "filename": "l.safetensors",
                "strength_model": 1.0,
                "strength_clip": 1.0,
            }
        ],
        prompt="p",
        negative="",
        seed=1,
        steps=2,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        width=64,
        height=64,
        batch_size=1,
    )
    extra: dict[str, list[str]] = {}
    for model in request["models"]:
        extra.setdefault(model["kind"], []).append(model["filename"])
    verdict = preflight.validate_prompt(
        request["workflow"], preflight.Catalogue.load_default(), extra_models=extra
    )
    assert verdict.accepted, verdict.body
    assert verdict.node_errors == {}


def test_bind_input_images() -> None:
    wf = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "old.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "old2.png"}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
    }
    bound = bind_input_images(wf, ["a.png", "b.png"], None)
    assert bound["2"]["inputs"]["image"] == "a.png" and bound["10"]["inputs"]["image"] == "b.png"
    assert wf["2"]["inputs"]["image"] == "old2.png", "the caller's graph is not modified"
    with pytest.raises(ValueError, match="1 input image"):
        bind_input_images(wf, ["a.png"], None)
    with pytest.raises(ValueError, match="not LoadImage"):
        bind_input_images(wf, ["a.png"], ["3"])


def test_decode_batch_values_and_resize() -> None:
    batch = decode_batch([_png((255, 0, 0)), _png((0, 0, 255), (8, 6))])
    assert batch.shape == (2, 3, 4, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(batch[1, 1, 1], [0.0, 0.0, 1.0], atol=1e-6)
    tensor = to_tensor(batch)
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (2, 3, 4, 3)


def test_encode_png_round_trip() -> None:
    tensor = torch.zeros((1, 2, 2, 3))
    tensor[0, 0, 0] = torch.tensor([1.0, 0.5, 0.0])
    (png,) = encode_png(tensor)
    back = decode_batch([png])
    np.testing.assert_allclose(back[0, 0, 0], [1.0, 128 / 255, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="IMAGE batch"):
        encode_png(np.zeros((2, 2)))


def test_run_workflow_request_binds_images() -> None:
    node = ComfyBurstRunWorkflow()
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
    request = node.build_request(json.dumps(wf), images=torch.ones((1, 2, 2, 3)), timeout_s=60)
    name = request["inputs"][0]["name"]
    assert request["workflow"]["1"]["inputs"]["image"] == name
    assert Image.open(io.BytesIO(base64.b64decode(request["inputs"][0]["data_b64"]))).size == (2, 2)
    assert request["options"] == {"timeout_s": 60}
    with pytest.raises(ValueError, match="not JSON"):
        node.build_request("{nope")
    with pytest.raises(ValueError, match="API-format"):
        node.build_request("[]")


def test_config_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("COMFYBURST_API_URL", "COMFYBURST_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "comfyburst.json").write_text(
        json.dumps({"api_url": "http://file", "api_key": "k"})
    )
    assert config.load_client_settings(str(tmp_path)).api_url == "http://file"
    monkeypatch.setenv("COMFYBURST_API_URL", "http://env")
    settings = config.load_client_settings(str(tmp_path))
    assert (settings.api_url, settings.api_key) == ("http://env", "k")


def test_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMFYBURST_API_URL", raising=False)
    with pytest.raises(SettingsError, match="set COMFYBURST_API_URL or api_url in"):
        config.load_client_settings(str(tmp_path))
    (tmp_path / "comfyburst.json").write_text(json.dumps({"api_ur1": "typo"}))
    with pytest.raises(SettingsError, match="unknown settings api_ur1"):
        config.load_client_settings(str(tmp_path))
    (tmp_path / "comfyburst.json").write_text("{")
    with pytest.raises(SettingsError, match="not valid JSON"):
        config.load_client_settings(str(tmp_path))


class ScriptedClient:
    """Answers like the API would for one job (a pure stand-in for the node's logic)."""

    def __init__(self, states: list[dict[str, Any]], outputs: dict[str, bytes]) -> None:
        self.states = states
        self.outputs = outputs
        self.cancelled = False

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"job_id": "j1", "state": "starting"}

    def wait(
        self, job_id: str, *, poll_s: float, on_update: Any, should_cancel: Any
    ) -> dict[str, Any]:
        for state in self.states:
            on_update(state)
            if should_cancel():
                self.cancelled = True
                return {"job_id": job_id, "state": "cancelled"}
        return self.states[-1]

    def fetch(self, url: str) -> bytes:
        return self.outputs[url]


def test_run_job_reports_progress_and_sorts_outputs() -> None:
    final = {
        "job_id": "j1",
        "state": "succeeded",
        "outputs": [
            {"name": "a_00001_.png", "signed_url": "u1"},
            {"name": "clip.mp4", "signed_url": "u2"},
        ],
    }
    client = ScriptedClient(
        [{"state": "running", "progress": {"fraction": 0.25}}, final], {"u1": b"png", "u2": b"mp4"}
    )
    seen: list[int] = []
    result = remote.run_job(
        client, {}, is_image=lambda n: n.endswith(".png"), on_progress=seen.append
    )  # type: ignore[arg-type]
    assert seen == [250, 0, 1000]
    assert result.images == [("a_00001_.png", b"png")] and result.files == [("clip.mp4", b"mp4")]


def test_run_job_keeps_subfolder_names_and_refuses_escapes() -> None:
    final = {
        "job_id": "j1",
        "state": "succeeded",
        "outputs": [
            {"name": "a/clip.mp4", "signed_url": "u1"},
            {"name": "b/clip.mp4", "signed_url": "u2"},
        ],
    }
    client = ScriptedClient([final], {"u1": b"one", "u2": b"two"})
    result = remote.run_job(client, {}, is_image=lambda n: n.endswith(".png"))  # type: ignore[arg-type]
    assert result.files == [("a/clip.mp4", b"one"), ("b/clip.mp4", b"two")]
    evil = {**final, "outputs": [{"name": "../../x.mp4", "signed_url": "u1"}]}
    with pytest.raises(remote.RemoteJobError, match="refused"):
        remote.run_job(ScriptedClient([evil], {"u1": b""}), {}, is_image=bool)  # type: ignore[arg-type]


def test_run_job_cancel_and_failure_messages() -> None:
    client = ScriptedClient([{"state": "running"}], {})
    with pytest.raises(remote.RemoteJobCancelled):
        remote.run_job(client, {}, is_image=bool, interrupted=lambda: True)  # type: ignore[arg-type]
    assert client.cancelled
    failed = {
        "job_id": "j1",
        "state": "failed",
        "error": {"node_id": "7", "node_type": "KSampler", "message": "CUDA out of memory"},
    }
    with pytest.raises(
        remote.RemoteJobError, match=r"on remote node 7 \(KSampler\): CUDA out of memory"
    ):
        remote.run_job(ScriptedClient([failed], {}), {}, is_image=bool)  # type: ignore[arg-type]


def test_preflight_rejection_shown_per_node() -> None:
    body = {
        "error": {
            "code": "workflow_invalid",
            "message": "Prompt outputs failed validation",
            "details": {
                "type": "prompt_outputs_failed_validation",
                "message": "m",
                "details": "",
                "extra_info": {},
            },
        },
        "node_errors": {
            "3": {
                "class_type": "KSampler",
                "dependent_outputs": ["9"],
                "errors": [
                    {
                        "type": "value_smaller_than_min",
                        "message": "Value 0 smaller than min of 1",
                        "details": "steps",
                        "extra_info": {"input_name": "steps"},
                    }
                ],
            }
        },
    }
    exc = ApiError(422, body)
    assert "node 3 (KSampler): Value 0 smaller than min of 1 — steps" in remote.describe_rejection(
        exc
    )
    shaped = routes.rejection_as_comfy_error(exc)
    assert shaped["error"]["type"] == "prompt_outputs_failed_validation"
    assert shaped["node_errors"]["3"]["errors"][0]["extra_info"]["input_name"] == "steps"


def test_wrap_for_queue_chains_models() -> None:
    models = [
        {"kind": "checkpoints", "url": "https://huggingface.co/a", "filename": "a"},
        {"kind": "loras", "url": "https://civitai.com/b", "filename": "b"},
    ]
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
    wrapper = routes.wrap_for_queue(graph, models)
    run = wrapper[routes.RUN_NODE_ID]["inputs"]
    assert json.loads(run["workflow"])["1"]["class_type"] == "EmptyImage"
    last = wrapper[run["models"][0]]
    assert last["inputs"]["kind"] == "loras" and last["inputs"]["models"][0] in wrapper
    assert wrapper[routes.SAVE_NODE_ID]["inputs"]["images"] == [routes.RUN_NODE_ID, 0]
    assert routes.register_routes() is False


def test_wrap_for_queue_saves_images_only_for_a_graph_that_makes_them() -> None:
    audio_only = {"1": {"class_type": "SaveAudio", "inputs": {}}}
    wrapper = routes.wrap_for_queue(audio_only, [])
    assert routes.SAVE_NODE_ID not in wrapper
    assert ComfyBurstRunWorkflow.OUTPUT_NODE  # so ComfyUI runs the wrapper without a save node


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.png", "image"),
        ("clip/A.MP4", "video"),
        ("x.webm", "video"),
        ("voice.flac", "audio"),
        ("s.wav", "audio"),
        ("mesh.glb", "file"),
        ("notes.txt", "file"),
    ],
)
def test_outputs_are_sorted_by_kind(name: str, kind: str) -> None:
    assert outputs.kind_of(name) == kind


def test_saved_outputs_keep_their_subfolders_and_kinds(tmp_path: Path) -> None:
    saved = outputs.save_files(tmp_path, [("a/clip.mp4", b"v"), ("b.wav", b"a"), ("m.glb", b"m")])
    assert saved.first("video") == tmp_path / "a" / "clip.mp4"
    assert (tmp_path / "a" / "clip.mp4").read_bytes() == b"v"
    assert saved.first("audio") == tmp_path / "b.wav"
    assert saved.first("image") is None
    assert len(saved.all_paths()) == 3


def test_video_and_audio_are_none_outside_comfyui(tmp_path: Path) -> None:
    assert _comfy.video_from_file(str(tmp_path / "x.mp4")) is None
    assert _comfy.audio_from_file(str(tmp_path / "x.wav")) is None


def test_verdict_rejection_only_when_nothing_can_run() -> None:
    assert routes.verdict_rejection({"valid": True, "node_errors": {"6": {}}}) is None
    rejected = routes.verdict_rejection(
        {"valid": False, "error": {"type": "invalid_prompt"}, "node_errors": {}}
    )
    assert rejected == {"error": {"type": "invalid_prompt"}, "node_errors": {}}
    fallback = routes.verdict_rejection({"valid": False, "node_errors": {"3": {"errors": []}}})
    assert fallback is not None and fallback["error"]["type"] == "prompt_outputs_failed_validation"


def test_queue_payload_carries_client_and_editor_graph() -> None:
    graph = {"1": {"class_type": "EmptyImage", "inputs": {}}}
    plain = routes.queue_payload({"prompt": graph})
    assert set(plain) == {"prompt"} and routes.RUN_NODE_ID in plain["prompt"]
    full = routes.queue_payload({"prompt": graph, "client_id": "c1", "workflow": {"nodes": []}})
    assert full["client_id"] == "c1"
    assert full["extra_data"] == {"extra_pnginfo": {"workflow": {"nodes": []}}}


def test_local_prompt_url() -> None:
    assert routes.local_prompt_url(None, 8188, False) == "http://127.0.0.1:8188/prompt"
    assert routes.local_prompt_url("0.0.0.0", 8188, False) == "http://127.0.0.1:8188/prompt"
    assert routes.local_prompt_url("::1", 8443, True) == "https://[::1]:8443/prompt"
    assert routes.local_prompt_url("10.1.2.3", 80, False) == "http://10.1.2.3:80/prompt"
