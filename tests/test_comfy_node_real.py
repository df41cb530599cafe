"""The ComfyBurst nodes inside a REAL ComfyUI (COMFYUI_DIR), sending jobs to a local cloud
whose VMs run the ComfyUI stand-in: the package loads, its nodes are listed as declared,
`Run workflow on GPU → SaveImage` saves the remote images, progress moves ComfyUI's bar,
Interrupt cancels the remote job, and remote errors name the remote node."""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

import comfy_node
from comfyburst.schema import ModelKind
from tests._comfy_real_support import (
    PACKAGE_DIR,
    ComfyStack,
    close,
    comfy_stack,
    inverted,
    random_colour,
    remote_invert,
    skip_reason,
)

pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.timeout(600),
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> ComfyStack:
    return comfy_stack(request)


def _run_prompt(workflow: dict[str, Any], prefix: str) -> dict[str, Any]:
    """This ComfyUI's prompt: run `workflow` on the GPU, save what comes back."""
    return {
        "run": {
            "class_type": "ComfyBurstRunWorkflow",
            "inputs": {"workflow": json.dumps(workflow), "timeout_s": 240},
        },
        "save": {
            "class_type": "SaveImage",
            "inputs": {"images": ["run", 0], "filename_prefix": prefix},
        },
    }


def _with_node(workflow: dict[str, Any], class_type: str, **inputs: Any) -> dict[str, Any]:
    """`workflow` with node 5 (`class_type`) between the invert and the save."""
    changed = copy.deepcopy(workflow)
    changed["5"] = {"class_type": class_type, "inputs": {"image": ["2", 0], **inputs}}
    changed["3"]["inputs"]["images"] = ["5", 0]
    return changed


def _combo(spec: list[Any]) -> list[str]:
    """A combo input's values in either of ComfyUI's spellings."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def _messages(entry: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [data for name, data in entry["status"]["messages"] if name == kind]


def test_package_imports_without_errors(stack: ComfyStack) -> None:
    startup = stack.log().split("Starting server")[0]
    loaded = [line for line in startup.splitlines() if line.rstrip().endswith(stack.package_name)]
    assert loaded, f"{stack.package_name} is not in ComfyUI's import list:\n{startup[-3000:]}"
    assert not any("IMPORT FAILED" in line for line in loaded), loaded
    # ComfyUI's own tracebacks (say, an optional module such as torchaudio it lacks) are not
    # ours: only a traceback through this package fails the test.
    package_dir = str(PACKAGE_DIR.resolve())
    # A block ends at its first blank line and before ComfyUI's import-time list (which names
    # every package's folder, ours too).
    blocks = [b.split("\n\n")[0].split("Import times")[0] for b in startup.split("Traceback")[1:]]
    ours = [b for b in blocks if package_dir in b or f"{stack.package_name}{os.sep}" in b]
    assert not ours, ours[0][-3000:]
    extensions = requests.get(f"{stack.url}/extensions", timeout=30).json()
    assert f"/extensions/{stack.package_name}/comfyburst.js" in extensions


def test_object_info_lists_the_four_nodes_as_declared(stack: ComfyStack) -> None:
    info = requests.get(f"{stack.url}/object_info", timeout=60).json()
    for name, cls in comfy_node.NODE_CLASS_MAPPINGS.items():
        node = info[name]
        assert node["display_name"] == comfy_node.NODE_DISPLAY_NAME_MAPPINGS[name]
        assert node["category"] == "ComfyBurst"
        assert node["output"] == list(cls.RETURN_TYPES)
        assert node["output_name"] == list(cls.RETURN_NAMES)
        declared = json.loads(json.dumps(cls.INPUT_TYPES()))
        if name == "ComfyBurstTxt2Img":
            # Inside ComfyUI the combos are ComfyUI's own lists, not the shipped catalogue's.
            required = node["input"]["required"]
            ksampler = info["KSampler"]["input"]["required"]
            for combo in ("sampler_name", "scheduler"):
                assert _combo(required[combo]) == _combo(ksampler[combo])
                declared["required"].pop(combo)
                required.pop(combo)
        assert node["input"] == declared, name
    kinds = _combo(info["ComfyBurstModelFromURL"]["input"]["required"]["kind"])
    assert kinds == [kind.value for kind in ModelKind]
    run = info["ComfyBurstRunWorkflow"]["input"]
    assert run["required"]["workflow"][1]["multiline"] is True
    assert run["optional"]["models"] == ["COMFYBURST_MODELS"]


def test_run_workflow_images_are_saved_by_save_image(stack: ComfyStack) -> None:
    value, rgb = random_colour()
    prefix = f"real_{uuid.uuid4().hex[:8]}"
    prompt_id = stack.queue(_run_prompt(remote_invert(value, batch_size=2), prefix))
    entry = stack.wait_done(prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = stack.saved_files(entry, "save")
    assert len(files) == 2
    for path in files:
        assert path.name.startswith(prefix) and path.exists()
        with Image.open(path) as image:
            assert image.size == (64, 64)
            pixel = image.convert("RGB").getpixel((10, 10))
        assert close(pixel, inverted(rgb)), (pixel, inverted(rgb), rgb)


def _collect_progress(ws: websocket.WebSocket, prompt_id: str, node: str) -> list[int]:
    """Progress values ComfyUI reports for `node` until the prompt has finished executing."""
    values: list[int] = []
    while True:
        message = ws.recv()
        if not isinstance(message, str):
            continue  # binary previews
        event = json.loads(message)
        data = event.get("data") or {}
        if data.get("prompt_id") != prompt_id:
            continue
        if event["type"] == "progress" and data.get("node") == node:
            assert data["max"] == 1000
            values.append(int(data["value"]))
        if event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
            return values


def test_remote_progress_moves_comfyui_progress_bar(stack: ComfyStack) -> None:
    value, _ = random_colour()
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://{stack.url[7:]}/ws?clientId={client_id}", timeout=240)
    try:
        workflow = _with_node(remote_invert(value), "ImageBlur", blur_radius=1, sigma=1.0)
        payload = {"prompt": _run_prompt(workflow, "progress"), "client_id": client_id}
        answer = requests.post(f"{stack.url}/prompt", json=payload, timeout=30)
        assert answer.status_code == 200, answer.text
        progress = _collect_progress(ws, answer.json()["prompt_id"], "run")
    finally:
        ws.close()
    assert progress and progress[-1] == 1000, progress
    assert [v for v in progress if 0 < v < 1000], f"no partial progress: {progress}"
    assert progress == sorted(progress)


def test_interrupt_in_comfyui_cancels_the_remote_job(
    stack: ComfyStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localcloud.scenarios.harness import Observer

    for name, setting in stack.cloud_env.items():  # the emulator hosts, for the observer
        monkeypatch.setenv(name, setting)

    value, _ = random_colour()
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://{stack.url[7:]}/ws?clientId={client_id}", timeout=240)
    try:
        workflow = _with_node(remote_invert(value), "ImageBlur", blur_radius=1, sigma=1.0)
        payload = {"prompt": _run_prompt(workflow, "interrupt"), "client_id": client_id}
        prompt_id = requests.post(f"{stack.url}/prompt", json=payload, timeout=30).json()[
            "prompt_id"
        ]
        # Interrupt once the remote slow node reports progress (the remote job is running).
        while True:
            message = ws.recv()
            if not isinstance(message, str):
                continue  # the remote job's preview frames, shown on the node
            event = json.loads(message)
            data = event.get("data") or {}
            running = event["type"] == "progress" and data.get("prompt_id") == prompt_id
            if running and 0 < data["value"] < 1000:
                break
            assert event["type"] not in ("execution_success", "execution_error"), event
    finally:
        ws.close()
    began = time.monotonic()
    requests.post(f"{stack.url}/interrupt", timeout=30).raise_for_status()
    entry = stack.wait_done(prompt_id, timeout_s=120)
    assert entry["status"]["status_str"] == "error"
    assert _messages(entry, "execution_interrupted"), entry["status"]
    assert time.monotonic() - began < 60
    observer = Observer(stack.cloud_env)
    try:
        newest = max(observer.jobs().values(), key=lambda job: job["created_at"])
    finally:
        observer.close()
    assert newest["state"] == "cancelled", newest["state"]


def test_remote_preflight_error_names_the_remote_node(stack: ComfyStack) -> None:
    value, _ = random_colour()
    workflow = _with_node(
        remote_invert(value), "ImageScale", upscale_method="no-such-method", width=8, height=8,
        crop="disabled",
    )  # fmt: skip
    prompt_id = stack.queue(_run_prompt(workflow, "preflight"))
    entry = stack.wait_done(prompt_id)
    assert entry["status"]["status_str"] == "error"
    (error,) = _messages(entry, "execution_error")
    assert error["node_id"] == "run" and error["node_type"] == "ComfyBurstRunWorkflow"
    assert "node 5 (ImageScale)" in error["exception_message"], error["exception_message"]
    assert "upscale_method" in error["exception_message"]


def test_queue_route_answers_preflight_errors_per_node(stack: ComfyStack) -> None:
    value, _ = random_colour()
    workflow = _with_node(
        remote_invert(value), "ImageScale", upscale_method="no-such-method", width=8, height=8,
        crop="disabled",
    )  # fmt: skip
    before = stack.history_ids()
    answer = requests.post(f"{stack.url}/comfyburst/queue", json={"prompt": workflow}, timeout=60)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["node_errors"]["5"]["class_type"] == "ImageScale"
    assert body["error"]["message"]
    assert stack.history_ids() == before, "a rejected workflow must not be queued"
