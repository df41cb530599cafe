"""The CLI's argument parsing into job requests: clear messages for bad input."""

import base64
import json
from pathlib import Path

import pytest

from comfyburst_cli.requests_builder import CliInputError, load_request, parse_model

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}}


def test_parse_model_with_filename_and_sha() -> None:
    entry = parse_model("loras/style.safetensors=https://civitai.com/api/x#sha256=" + "a" * 64)
    assert entry == {
        "kind": "loras",
        "filename": "style.safetensors",
        "url": "https://civitai.com/api/x",
        "sha256": "a" * 64,
    }


def test_parse_model_takes_filename_from_url() -> None:
    entry = parse_model("checkpoints=https://huggingface.co/r/resolve/main/m.safetensors")
    assert entry["filename"] == "m.safetensors"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("https://x", "expected KIND"),
        ("nope=https://huggingface.co/a.ckpt", "unknown kind 'nope'"),
        ("vae=https://huggingface.co/a.pt#md5=1", "#sha256=HEX"),
        ("vae=https://huggingface.co/", "give a filename"),
    ],
)
def test_parse_model_errors(spec: str, message: str) -> None:
    with pytest.raises(CliInputError, match=message):
        parse_model(spec)


def test_load_request_from_workflow_with_inputs(tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG fake")
    request = load_request(wf, ["vae=https://huggingface.co/v.pt"], [image], 60)
    assert request["workflow"] == WORKFLOW
    assert request["models"][0]["filename"] == "v.pt"
    assert base64.b64decode(request["inputs"][0]["data_b64"]) == b"\x89PNG fake"
    assert request["options"]["timeout_s"] == 60


def test_load_request_accepts_whole_request(tmp_path: Path) -> None:
    wf = tmp_path / "req.json"
    wf.write_text(json.dumps({"workflow": WORKFLOW, "options": {"timeout_s": 30}}))
    assert load_request(wf, [], [], None)["options"] == {"timeout_s": 30}


def test_load_request_errors(tmp_path: Path) -> None:
    with pytest.raises(CliInputError, match="no such file"):
        load_request(tmp_path / "missing.json", [], [], None)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(CliInputError, match="not JSON"):
        load_request(bad, [], [], None)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"1": {"inputs": {}}}))
    with pytest.raises(CliInputError, match="not a valid job request"):
        load_request(wrong, [], [], None)
    good = tmp_path / "ok.json"
    good.write_text(json.dumps(WORKFLOW))
    with pytest.raises(CliInputError, match="--input"):
        load_request(good, [], [tmp_path / "nope.png"], None)
