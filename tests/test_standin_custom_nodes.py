"""The ComfyUI stand-in loads custom-node packs as ComfyUI 0.3.64 does (folders with an
`__init__.py` and single `.py` files; a pack that fails to import is skipped, the rest load;
core nodes stay core) and the packs of the environment its `--layer-file` names, with that
layer's site-packages importable; `/system_stats` says which start and environment it is."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from localcloud.comfyui_standin import StandinServer
from tests._poll import poll_until

REPO = Path(__file__).resolve().parent.parent
HTTP_TIMEOUT_S = 10

BRIGHTEN = """
import numpy as np


class Brighten:
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "note")
    FUNCTION = "run"
    CATEGORY = "cbtest"
    DESCRIPTION = "adds to every channel"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "amount": ("FLOAT", {"default": 0.1})}}

    def run(self, image, amount):
        return (np.clip(image + amount, 0.0, 1.0), f"{image.shape[0]} frames")


class ShowText:
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "cbtest"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"text": ("STRING", {"forceInput": True})},
            "hidden": {"node": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    def show(self, text, node, prompt):
        return {"ui": {"text": [text, node, prompt[node]["class_type"]]}, "result": ()}


NODE_CLASS_MAPPINGS = {"CbBrighten": Brighten, "CbShowText": ShowText}
NODE_DISPLAY_NAME_MAPPINGS = {"CbBrighten": "Brighten (test pack)"}
"""

SINGLE = """
class Twice:
    RETURN_TYPES = ("INT",)
    FUNCTION = "twice"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1})}}

    def twice(self, value):
        return (value * 2,)


class NotInvert:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        return (image,)


NODE_CLASS_MAPPINGS = {"CbTwice": Twice, "ImageInvert": NotInvert}
"""


def _packs(root: Path) -> Path:
    """A custom_nodes folder: two good packs, one that raises, one without mappings, and
    entries ComfyUI passes over."""
    nodes = root / "custom_nodes"
    (nodes / "bright_pack").mkdir(parents=True)
    (nodes / "bright_pack" / "__init__.py").write_text(BRIGHTEN)
    (nodes / "single_node.py").write_text(SINGLE)
    (nodes / "broken_pack").mkdir()
    (nodes / "broken_pack" / "__init__.py").write_text("import cb_no_such_module_here\n")
    (nodes / "empty_pack").mkdir()
    (nodes / "empty_pack" / "__init__.py").write_text("WEB_DIRECTORY = None\n")
    (nodes / "off_pack.disabled").mkdir()
    (nodes / "off_pack.disabled" / "__init__.py").write_text("raise SystemExit(3)\n")
    (nodes / "README.md").write_text("not a pack\n")
    return nodes


def _run(url: str, prompt: dict[str, Any]) -> dict[str, Any]:
    prompt_id = str(uuid.uuid4())
    body = {"prompt": prompt, "prompt_id": prompt_id}
    answer = requests.post(f"{url}/prompt", json=body, timeout=HTTP_TIMEOUT_S)
    assert answer.status_code == 200, answer.text

    def finished() -> dict[str, Any] | None:
        entry = requests.get(f"{url}/history/{prompt_id}", timeout=HTTP_TIMEOUT_S).json()
        done = entry.get(prompt_id)
        return done if done and done["status"]["completed"] is not None else None

    entry = poll_until(finished, "the prompt to finish", timeout_s=30)
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry["outputs"]


def test_packs_load_as_comfyui_loads_them_and_run_in_prompts(tmp_path: Path) -> None:
    nodes = _packs(tmp_path)
    dirs = [tmp_path / d for d in ("in", "out", "tmp")]
    with StandinServer(*dirs, custom_nodes_dirs=(nodes,)) as server:
        url = server.base_url
        info = requests.get(f"{url}/object_info", timeout=HTTP_TIMEOUT_S).json()
        bright = info["CbBrighten"]
        assert bright["display_name"] == "Brighten (test pack)"
        assert bright["python_module"] == "custom_nodes.bright_pack"
        assert bright["output"] == ["IMAGE", "STRING"]
        assert bright["output_name"] == ["image", "note"]
        assert bright["description"] == "adds to every channel"
        assert bright["input_order"] == {"required": ["image", "amount"]}
        assert info["CbShowText"]["input_order"]["hidden"] == ["node", "prompt"]
        assert info["CbTwice"]["python_module"] == "custom_nodes.single_node"
        assert info["CbTwice"]["display_name"] == "CbTwice"
        assert info["ImageInvert"]["python_module"] == "nodes"  # a pack never replaces core
        boot = requests.get(f"{url}/system_stats", timeout=HTTP_TIMEOUT_S).json()["system"]
        boot = boot["standin_boot"]
        assert boot["environment_id"] is None
        assert sorted(Path(p).name for p in boot["custom_nodes_failed"]) == [
            "broken_pack",
            "empty_pack",
        ]
        assert sorted(Path(p).name for p in boot["custom_nodes_loaded"]) == [
            "bright_pack",
            "single_node.py",
        ]

        prompt = {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 4, "batch_size": 2, "color": 0x202020},
            },
            "2": {"class_type": "CbBrighten", "inputs": {"image": ["1", 0], "amount": 0.25}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "4": {
                "class_type": "SaveImage",
                "inputs": {"images": ["3", 0], "filename_prefix": "cb"},
            },
            "5": {"class_type": "CbShowText", "inputs": {"text": ["2", 1]}},
        }
        outputs = _run(url, prompt)
        assert outputs["5"] == {"text": ["2 frames", "5", "CbShowText"]}
        saved = outputs["4"]["images"]
        assert len(saved) == 2
        view = requests.get(f"{url}/view", params=saved[0], timeout=HTTP_TIMEOUT_S)
        pixel = Image.open(io.BytesIO(view.content)).convert("RGB").getpixel((0, 0))
        # 0x20 → +0.25 → inverted by the core ImageInvert: 255 * 0.75 - 32 = 159.25.
        assert pixel == (159, 159, 159)


LAYER_PACK = """
from cb_layer_dep import FACTOR


class Scaled:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1})}}

    def run(self, value):
        return (value * FACTOR,)


class Show:
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    def show(self, value):
        return {"ui": {"text": [str(value)]}, "result": ()}


NODE_CLASS_MAPPINGS = {"CbLayerScaled": Scaled, "CbLayerShow": Show}
"""


def _start(tmp_path: Path, layer_file: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "localcloud.comfyui_standin", "--port", "0"]
    for name in ("input", "output", "temp"):
        args += [f"--{name}-dir", str(tmp_path / name)]
    args += ["--layer-file", str(layer_file)]
    return subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_the_layer_file_names_the_packs_their_site_packages_and_the_environment(
    tmp_path: Path,
) -> None:
    layer = tmp_path / "layer"
    (layer / "custom_nodes" / "scaled_pack").mkdir(parents=True)
    (layer / "custom_nodes" / "scaled_pack" / "__init__.py").write_text(LAYER_PACK)
    (layer / "site-packages").mkdir()
    (layer / "site-packages" / "cb_layer_dep.py").write_text("FACTOR = 7\n")
    layer_file = tmp_path / "comfyui-layer.json"
    layer_file.write_text(
        json.dumps(
            {
                "environment_id": "env-layer-test",
                "custom_nodes": str(layer / "custom_nodes"),
                "site_packages": str(layer / "site-packages"),
            }
        )
    )
    process = _start(tmp_path, layer_file)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("READY http://"), line
        url = line.removeprefix("READY ")
        stats = requests.get(f"{url}/system_stats", timeout=HTTP_TIMEOUT_S).json()
        boot = stats["system"]["standin_boot"]
        assert boot["environment_id"] == "env-layer-test"
        assert len(boot["boot_id"]) == 32 and boot["custom_nodes_failed"] == []
        prompt = {
            "1": {"class_type": "CbLayerScaled", "inputs": {"value": 6}},
            "2": {"class_type": "CbLayerShow", "inputs": {"value": ["1", 0]}},
        }
        assert _run(url, prompt)["2"] == {"text": ["42"]}
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_a_malformed_layer_file_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    layer_file = tmp_path / "comfyui-layer.json"
    layer_file.write_text(json.dumps({"environment_id": 5}))
    process = _start(tmp_path, layer_file)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "environment_id must be a non-empty string or null" in stderr


def test_the_in_process_server_rereads_its_layer_file_at_each_start(tmp_path: Path) -> None:
    nodes = _packs(tmp_path)
    layer_file = tmp_path / "comfyui-layer.json"
    dirs = [tmp_path / d for d in ("in", "out", "tmp")]
    server = StandinServer(*dirs, layer_file=layer_file)
    url = server.start()
    try:
        base = requests.get(f"{url}/system_stats", timeout=HTTP_TIMEOUT_S).json()["system"]
        assert base["standin_boot"]["environment_id"] is None  # no file: the base
        assert "CbTwice" not in requests.get(f"{url}/object_info", timeout=HTTP_TIMEOUT_S).json()
        layer_file.write_text(json.dumps({"environment_id": "env-2", "custom_nodes": str(nodes)}))
        server.stop()
        assert server.start() == url  # a restart, on the same port
        boot = requests.get(f"{url}/system_stats", timeout=HTTP_TIMEOUT_S).json()["system"]
        assert boot["standin_boot"]["environment_id"] == "env-2"
        assert boot["standin_boot"]["boot_id"] != base["standin_boot"]["boot_id"]
        assert "CbTwice" in requests.get(f"{url}/object_info", timeout=HTTP_TIMEOUT_S).json()
    finally:
        server.stop()
