"""Comfy API v2 with a REAL ComfyUI on the local cloud's VM (COMFYUI_DIR, a checkout the cloud
starts; or COMFYUI_URL, one the user runs on the cloud's folders): comfy-sdk (pinned,
unmodified) runs an image, two animated (SaveWEBM, SaveAnimatedWEBP) and an audio workflow, and
each output comes back typed `image` / `video` / `audio` with its bytes."""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import wave
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from comfy_sdk import Comfy

from localcloud import real_comfyui
from localcloud.scenarios.harness import cloud_config, running_cloud

pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (os.environ.get("COMFYUI_DIR") or os.environ.get("COMFYUI_URL")),
        reason="COMFYUI_DIR or COMFYUI_URL is not set (needs a real ComfyUI)",
    ),
]

KEY = "real-v2-key"
FRAMES = 4


@pytest.fixture(scope="module")
def cloud_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Its own cloud: one VM on the real ComfyUI, API-key auth with this module's key."""
    root = tmp_path_factory.mktemp("v2-real-comfyui")
    hashes = f"ana={hashlib.sha256(KEY.encode()).hexdigest()}"
    settings_env = {"COMFYBURST_AUTH_MODE": "api_key", "COMFYBURST_API_KEY_HASHES": hashes}
    config = cloud_config(root / "cloud", pool_size=1, settings_env=settings_env)
    comfyui = real_comfyui.from_env(root / "comfyui")
    with running_cloud(replace(config, comfyui=comfyui)) as cloud:
        if cloud.comfyui_advice:
            pytest.skip(f"the ComfyUI at COMFYUI_URL does not use the cloud's folders: "
                        f"{cloud.comfyui_advice}")  # fmt: skip
        yield dict(cloud.env)


@pytest.fixture
def localcloud_env(cloud_env: dict[str, str]) -> dict[str, str]:
    """This module's cloud (conftest's autouse wipe empties it before each test)."""
    return cloud_env


@pytest.fixture
def client(cloud_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Comfy]:
    monkeypatch.setenv("COMFY_BASE_URL", cloud_env["COMFYBURST_API_URL"])
    made = Comfy(api_key=KEY, timeout=60.0)
    yield made
    made.close()


def _frames(save: dict[str, Any]) -> dict[str, Any]:
    empty = {"width": 32, "height": 32, "batch_size": FRAMES, "color": 0x3366AA}
    return {"1": {"class_type": "EmptyImage", "inputs": empty}, "2": save}


def _tone_wav() -> bytes:
    """A quarter second of 440 Hz, 16-bit mono at 8 kHz."""
    rate = 8000
    samples = (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(rate // 4))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()


def _only_output(job: Any) -> Any:
    assert job.status == "succeeded", job.error
    (output,) = job.outputs
    data = output.to_bytes()
    assert len(data) == output.size_bytes > 0
    return output, data


def test_a_saved_image_is_typed_image(client: Comfy) -> None:
    save = {"images": ["1", 0], "filename_prefix": "v2img"}
    workflow = _frames({"class_type": "SaveImage", "inputs": save})
    workflow["1"]["inputs"]["batch_size"] = 1
    output, data = _only_output(client.run(client.workflows.from_json(workflow), timeout=600))
    assert (output.type, output.content_type) == ("image", "image/png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_animation_saved_as_webm_is_typed_video(client: Comfy) -> None:
    save = {"images": ["1", 0], "filename_prefix": "v2anim", "codec": "vp9", "fps": 6.0}
    workflow = _frames({"class_type": "SaveWEBM", "inputs": {**save, "crf": 32.0}})
    output, data = _only_output(client.run(client.workflows.from_json(workflow), timeout=600))
    assert (output.type, output.content_type) == ("video", "video/webm")
    assert data[:4] == b"\x1a\x45\xdf\xa3"  # EBML, the Matroska/WebM header


def test_an_animated_webp_is_typed_video(client: Comfy) -> None:
    """SaveAnimatedWEBP writes `image/webp`; ComfyUI's `animated` flag makes it a video."""
    save = {"images": ["1", 0], "filename_prefix": "v2webp", "fps": 6.0, "lossless": True}
    workflow = _frames(
        {"class_type": "SaveAnimatedWEBP", "inputs": {**save, "quality": 80, "method": "default"}}
    )
    output, data = _only_output(client.run(client.workflows.from_json(workflow), timeout=600))
    assert (output.type, output.content_type) == ("video", "image/webp")
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def test_saved_audio_is_typed_audio(client: Comfy) -> None:
    tone = client.assets.from_bytes(_tone_wav(), filename="tone.wav")
    workflow = client.workflows.from_json(
        {
            "1": {"class_type": "LoadAudio", "inputs": {"audio": "placeholder.wav"}},
            "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "a"}},
        }
    )
    workflow.set_input("1", "audio", tone)  # uploaded, sent as a core/ASSET reference
    output, data = _only_output(client.run(workflow, timeout=600))
    assert output.type == "audio" and output.content_type.startswith("audio/")
    assert data[:4] == b"fLaC"
