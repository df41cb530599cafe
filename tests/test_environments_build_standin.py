"""The ComfyUI stand-in loads a built layer's packs from an extra custom_nodes folder the way
ComfyUI does: their node types are in `/object_info` and a prompt using them runs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import requests

from comfyburst_worker.env_build import LayerBuilder
from localcloud.comfyui_standin import StandinServer
from tests._env_pack_support import (
    NODE_TYPE,
    double_and_show_pack,
    make_base_venv,
    make_pack_repo,
    make_wheelhouse,
    pip_args,
)
from tests._poll import poll_until

pytestmark = pytest.mark.slow

SHOW = "CbEnvTestShow"
PACK = double_and_show_pack(NODE_TYPE, SHOW)


def test_the_standin_runs_a_built_layers_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    wheels = make_wheelhouse(tmp_path / "wheels")
    base = make_base_venv(tmp_path / "base", wheels)
    repo = tmp_path / "repos" / "owner" / "show-pack"
    commit = make_pack_repo(repo, init_text=PACK)
    layer = tmp_path / "layer"
    LayerBuilder(base_python=base, pip_args=pip_args(wheels)).build(
        [f"file://{repo}@{commit}"], layer
    )
    # What the layer's venv holds, importable as ComfyUI's PYTHONPATH would make it.
    monkeypatch.syspath_prepend(str(next((layer / "venv").glob("lib/python*/site-packages"))))
    dirs = [tmp_path / d for d in ("in", "out", "tmp")]
    server = StandinServer(*dirs, custom_nodes_dirs=(layer / "custom_nodes",))
    url = server.start()
    try:
        info = requests.get(f"{url}/object_info", timeout=10).json()
        assert info[NODE_TYPE]["input"]["required"]["value"][0] == "INT"
        assert info[SHOW]["output_node"] is True
        assert "SaveImage" in info  # the core nodes stay
        prompt_id = str(uuid.uuid4())
        prompt = {
            "1": {"class_type": NODE_TYPE, "inputs": {"value": 21}},
            "2": {"class_type": SHOW, "inputs": {"value": ["1", 0]}},
        }
        answer = requests.post(
            f"{url}/prompt", json={"prompt": prompt, "prompt_id": prompt_id}, timeout=10
        )
        assert answer.status_code == 200, answer.text

        def finished() -> dict[str, object] | None:
            entry = requests.get(f"{url}/history/{prompt_id}", timeout=10).json().get(prompt_id)
            return entry if entry and entry.get("outputs") else None

        entry = poll_until(finished, "the prompt to finish", timeout_s=30)
        assert entry["outputs"]["2"] == {"text": ["42"]}  # type: ignore[index]
    finally:
        server.stop()
