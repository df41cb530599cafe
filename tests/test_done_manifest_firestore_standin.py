"""What a worker reports, from the ComfyUI stand-in to done.json to the job, without emulators.

The stand-in answers `POST /prompt` with ComfyUI's own error payloads (the transcripts of a real
ComfyUI 0.3.64), `input_config` and all; the worker bounds what it reports so its done.json
always parses; the job keeps the details as JSON text that Firestore takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from comfyburst.domain.json_safety import json_size
from comfyburst.domain.manifest import (
    MAX_ERROR_TEXT_CHARS,
    MAX_MANIFEST_BYTES,
    MAX_STORED_DETAILS_BYTES,
    parse_manifest,
    reported_error,
    stored_error,
)
from comfyburst.schema import DoneStatus, JobError, VmRef
from tests._worker_support import local_config, local_settings, make_agent, make_request, put_job
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

TRANSCRIPTS = Path(__file__).parent / "test_data" / "comfyui_api"
VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")


def _cases() -> dict[str, Any]:
    cases: dict[str, Any] = json.loads((TRANSCRIPTS / "prompt_errors.json").read_text())
    return cases


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """The body with each traceback reduced to its shape (the frames are the server's own)."""
    body = json.loads(json.dumps(body))
    for entry in body.get("node_errors", {}).values():
        for error in entry["errors"]:
            trace = error.get("extra_info", {}).get("traceback")
            if trace is not None:
                assert trace and all(isinstance(line, str) for line in trace), trace
                error["extra_info"]["traceback"] = "frames"
    return body


def test_the_standin_refuses_prompts_with_comfyuis_payloads(standin):
    refused = {k: v for k, v in _cases().items() if v["response"]["status"] == 400}
    assert len(refused) == 16
    for name, case in refused.items():
        real = case["response"]["json"]
        if name == "missing_checkpoint_file":  # the stand-in holds no checkpoint at all
            error = real["node_errors"]["1"]["errors"][0]
            error["extra_info"]["input_config"][0] = []
            error["details"] = "ckpt_name: 'does_not_exist.safetensors' not in []"
        answer = requests.post(f"{standin}/prompt", json=case["request"]["json"], timeout=30)
        assert answer.status_code == 400, (name, answer.text)
        assert _comparable(answer.json()) == _comparable(real), name


def _run(tmp_path: Path, standin: str, workflow: dict[str, Any]) -> bytes:
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    job = put_job(store, blobs, config, make_request(workflow), VM)
    settings = local_settings(standin, tmp_path / "models", comfyui_ready_timeout_s=30)
    make_agent(settings, config, store, blobs, VM).run(job.job_id)
    raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
    assert raw is not None, "no done.json"
    return raw


def _checkpoint_workflow(ckpt_name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = _cases()["missing_checkpoint_file"]["request"]["json"]["prompt"]
    workflow["1"]["inputs"]["ckpt_name"] = ckpt_name
    return workflow


def test_the_worker_reports_the_refusal_of_a_missing_checkpoint(tmp_path, standin):
    raw = _run(tmp_path, standin, _checkpoint_workflow("absent.safetensors"))
    done = parse_manifest(raw, json.loads(raw)["job_id"])
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert (done.error.node_id, done.error.node_type) == ("1", "CheckpointLoaderSimple")
    assert done.error.message == "Value not in list: ckpt_name: 'absent.safetensors' not in []"
    extra = done.error.details["node_errors"]["1"]["errors"][0]["extra_info"]
    assert extra["input_config"][0] == []


def test_a_huge_refusal_still_makes_a_done_json_that_parses(tmp_path, standin):
    """ComfyUI echoes the value it refused, in the message and twice in the payload."""
    huge = "c" * 600_000 + ".safetensors"
    raw = _run(tmp_path, standin, _checkpoint_workflow(huge))
    assert len(raw) < MAX_MANIFEST_BYTES
    done = parse_manifest(raw, json.loads(raw)["job_id"])
    assert done.error is not None and done.error.node_type == "CheckpointLoaderSimple"
    assert done.error.message.startswith("Value not in list: ckpt_name: 'ccc")
    assert len(done.error.message) <= MAX_ERROR_TEXT_CHARS + 20


def test_stored_details_are_bounded_json_text_firestore_takes():
    details = {
        "node_errors": {"1": {"input_config": [["a", ["b"]], {}], "__x__": 2**70}},
        "": [float("nan"), "\ud800 lone", "x" * 300_000],
        "deep": json.loads("[" * 50 + "]" * 50),
    }
    stored = stored_error(JobError(type="validation_error", message="m" * 9000, details=details))
    assert isinstance(stored.details, str)
    assert len(stored.details.encode()) <= MAX_STORED_DETAILS_BYTES
    back = json.loads(stored.details)
    assert back["node_errors"]["1"]["input_config"] == [["a", ["b"]], {}]
    assert back["node_errors"]["1"]["__x__"] == str(2**70)  # past 64 bits: as text
    assert back[""][:2] == ["nan", "\ufffd lone"]
    assert len(stored.message) <= MAX_ERROR_TEXT_CHARS + 20
    # The worker's bound keeps JSON values (done.json is not Firestore) within its budget.
    reported = reported_error(JobError(type="validation_error", message="m", details=details))
    assert reported.details["node_errors"]["1"]["input_config"] == [["a", ["b"]], {}]
    assert json_size(reported.details) < MAX_MANIFEST_BYTES // 2
    reported.model_dump_json()  # no lone surrogate left to refuse
