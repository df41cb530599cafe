"""POST /jobs and POST /jobs:validate through the functions-framework app, on fakes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyburst.schema import JobRequest
from tests._api_support import PNG_1X1, WORKFLOW, body, ckpt_body, fake_env


def test_submit_starts_a_vm_and_stores_the_request_first() -> None:
    env = fake_env()
    response = env.submit(ckpt_body())
    assert response.status_code == 202
    job = response.get_json()
    assert job["state"] == "starting"
    assert response.headers["Location"] == f"/jobs/{job['job_id']}"
    assert job["request"]["models"] == ["checkpoints/my.safetensors"]
    stored = env.blobs.read("jobs-b", f"jobs/{job['job_id']}/request.json")
    assert JobRequest.model_validate_json(stored) == JobRequest.model_validate(ckpt_body())
    running = [vm for vm in env.fleet.vms.values() if vm.status == "RUNNING"]
    assert len(running) == 1 and "comfyburst-job" not in running[0].metadata
    # Its worker learns the job from the lease, committed with the job before the start.
    assert env.store.get_vm(running[0].name)[0].lease.job_id == job["job_id"]
    # Internal fields stay inside.
    for private in ("vm", "caller", "idempotency_key", "expire_at", "result"):
        assert private not in job


def test_inputs_are_written_next_to_the_request() -> None:
    env = fake_env()
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    response = env.submit(
        {"workflow": workflow, "inputs": [{"name": "in.png", "data_b64": PNG_1X1}]}
    )
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    assert env.blobs.read("jobs-b", f"jobs/{job_id}/inputs/in.png")[:4] == b"\x89PNG"
    assert env.blobs.objects[("jobs-b", f"jobs/{job_id}/inputs/in.png")][1] == "image/png"


def test_no_free_vm_answers_queued_with_the_reason() -> None:
    env = fake_env(vms=[("gpu-a1", "zone-a")])
    first, second = env.submit(body()), env.submit(body())
    assert first.get_json()["state"] == "starting"
    assert second.status_code == 202
    assert second.get_json()["state"] == "queued"
    assert second.get_json()["queued_reason"] == "no free VM"


def test_same_idempotency_key_answers_the_same_job() -> None:
    env = fake_env()
    first = env.submit(body(), **{"Idempotency-Key": "abc"})
    again = env.submit(body(), **{"Idempotency-Key": "abc"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert len(env.store.jobs) == 1
    assert len([c for c in env.fleet.calls if c[0] == "start"]) == 1
    different = env.submit(body(options={"timeout_s": 60}), **{"Idempotency-Key": "abc"})
    assert different.status_code == 409
    assert different.get_json()["error"]["code"] == "idempotency_conflict"
    other = env.submit(body(), **{"Idempotency-Key": "xyz"})
    assert other.status_code == 202 and other.get_json()["job_id"] != first.get_json()["job_id"]


def test_idempotency_keys_are_per_caller() -> None:
    env = fake_env(auth_mode="api_key", api_key_hashes=[_sha("k1"), _sha("k2")])
    one = env.submit(body(), **{"Idempotency-Key": "same", "X-API-Key": "k1"})
    two = env.submit(body(), **{"Idempotency-Key": "same", "X-API-Key": "k2"})
    assert one.status_code == two.status_code == 202
    assert one.get_json()["job_id"] != two.get_json()["job_id"]


def test_a_retry_after_a_crash_between_request_and_job_creates_the_job() -> None:
    env = fake_env()
    first = env.submit(body(), **{"Idempotency-Key": "crash"})
    job_id = first.get_json()["job_id"]
    env.store.jobs.clear()  # as if the first submit died after writing request.json
    env.store.idempotency.clear()
    again = env.submit(body(), **{"Idempotency-Key": "crash"})
    assert again.status_code == 202 and again.get_json()["job_id"] == job_id


def _sha(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


BAD_INPUT: list[tuple[str, Any, int, str, str | None]] = [
    ("malformed json", b"{not json", 400, "invalid_json", None),
    (
        "NaN",
        b'{"workflow": {"1": {"class_type": "X", "inputs": {"a": NaN}}}}',
        400,
        "invalid_json",
        None,
    ),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json", None),
    ("not an object", [1, 2], 400, "invalid_request", None),
    ("no workflow", {"models": []}, 400, "invalid_request", "workflow"),
    ("workflow list", {"workflow": [WORKFLOW]}, 400, "invalid_request", "workflow"),
    (
        "ui format node",
        {"workflow": {"1": {"type": "KSampler"}}},
        400,
        "invalid_request",
        "workflow.1.class_type",
    ),
    (
        "node without inputs",
        {"workflow": {"1": {"class_type": "SaveImage"}}},
        400,
        "invalid_request",
        "workflow.1.inputs",
    ),
    ("unknown field", body(extra=1), 400, "invalid_request", "extra"),
    ("bad timeout", body(options={"timeout_s": 1}), 400, "invalid_request", "options.timeout_s"),
    (
        "path escape",
        body(models=[{"kind": "loras", "filename": "../x", "url": "https://civitai.com/x"}]),
        400,
        "invalid_request",
        "models.0.filename",
    ),
    (
        "bad kind",
        body(models=[{"kind": "scripts", "filename": "x", "url": "https://civitai.com/x"}]),
        400,
        "invalid_request",
        "models.0.kind",
    ),
    (
        "bad base64",
        body(inputs=[{"name": "a.png", "data_b64": "***"}]),
        400,
        "invalid_request",
        "inputs.0.data_b64",
    ),
    (
        "duplicate inputs",
        body(inputs=[{"name": "a.png", "data_b64": PNG_1X1}] * 2),
        400,
        "invalid_request",
        None,
    ),
    (
        "duplicate models",
        body(models=[{"kind": "loras", "filename": "a", "url": "https://civitai.com/a"}] * 2),
        400,
        "invalid_request",
        None,
    ),
    ("http url", ckpt_body("http://civitai.com/x"), 400, "invalid_request", "models.0.url"),
    (
        "host not allowed",
        ckpt_body("https://example.com/x"),
        400,
        "invalid_request",
        "models.0.url",
    ),
    ("ip literal", ckpt_body("https://169.254.169.254/x"), 400, "invalid_request", "models.0.url"),
    (
        "private name",
        ckpt_body("https://metadata.google.internal/x"),
        400,
        "invalid_request",
        "models.0.url",
    ),
    ("userinfo", ckpt_body("https://a@civitai.com/x"), 400, "invalid_request", "models.0.url"),
    ("odd port", ckpt_body("https://civitai.com:444/x"), 400, "invalid_request", "models.0.url"),
    ("foreign bucket", ckpt_body("gs://someone-else/x"), 400, "invalid_request", "models.0.url"),
    (
        "too many nodes",
        {"workflow": {str(i): {"class_type": "X", "inputs": {}} for i in range(11)}},
        413,
        "payload_too_large",
        "workflow",
    ),
    (
        "workflow bytes",
        body(workflow={"1": {"class_type": "X", "inputs": {"t": "a" * 3000}}}),
        413,
        "payload_too_large",
        "workflow",
    ),
    (
        "input bytes",
        body(inputs=[{"name": "a.png", "data_b64": "QUJD" * 3000}]),
        413,
        "payload_too_large",
        "inputs",
    ),
]


@pytest.mark.parametrize(
    ("name", "request_body", "status", "code", "field"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused_and_nothing_is_written(
    name: str, request_body: Any, status: int, code: str, field: str | None
) -> None:
    env = fake_env(max_nodes=10, max_workflow_bytes=2000, max_input_bytes=5000)
    response = env.submit(request_body, **{"Idempotency-Key": "k"})
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert env.nothing_written()
    assert env.fleet.calls == []


def test_oversized_body_is_refused_before_it_is_read() -> None:
    env = fake_env(max_workflow_bytes=100, max_input_bytes=100)
    response = env.submit(b" " * (env.deps.settings.max_workflow_bytes + 1_000_200))
    assert response.status_code == 413
    assert env.nothing_written()


def test_workflow_rejected_by_preflight_answers_comfyui_node_errors() -> None:
    env = fake_env()
    workflow = json.loads(json.dumps(WORKFLOW))
    workflow["1"]["inputs"]["width"] = 10**9
    response = env.submit({"workflow": workflow})
    assert response.status_code == 422
    data = response.get_json()
    assert data["error"]["code"] == "workflow_invalid"
    assert data["error"]["details"]["type"] == "prompt_outputs_failed_validation"
    assert data["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    assert env.nothing_written()


def test_missing_model_is_caught_unless_the_job_brings_it() -> None:
    env = fake_env()
    request = ckpt_body()
    del request["workflow"]["2"]  # the checkpoint branch is the only output
    request["models"] = []
    response = env.submit(request)
    assert response.status_code == 422
    assert response.get_json()["node_errors"]["3"]["errors"][0]["type"] == "value_not_in_list"
    assert env.submit(ckpt_body()).status_code == 202


def test_unknown_node_type_is_rejected() -> None:
    env = fake_env()
    response = env.submit({"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"]["type"] == "invalid_prompt"


def test_validate_answers_the_verdict_and_writes_nothing() -> None:
    env = fake_env()
    good = env.client.post("/jobs:validate", json=body())
    assert good.status_code == 200
    assert good.get_json() == {
        "valid": True,
        "error": None,
        "node_errors": {},
        "node_errors_omitted": 0,
        "outputs_to_execute": ["2"],
    }
    bad = env.client.post(
        "/jobs:validate", json={"workflow": {"1": {"class_type": "Nope", "inputs": {}}}}
    )
    assert bad.status_code == 200
    assert bad.get_json()["valid"] is False and bad.get_json()["error"]["type"] == "invalid_prompt"
    assert env.client.post("/jobs:validate", data=b"{").status_code == 400
    assert env.nothing_written() and env.fleet.calls == []


def test_a_workflow_with_one_broken_output_runs_the_valid_one_as_comfyui_does() -> None:
    env = fake_env()
    request = ckpt_body()
    request["workflow"]["6"]["inputs"]["images"] = ["1", 5]  # EmptyImage has one output
    response = env.submit(request)
    assert response.status_code == 202
    data = response.get_json()
    assert data["preflight_node_errors"]["6"]["dependent_outputs"] == ["6"]
    assert data["preflight_node_errors"]["6"]["errors"][0]["type"] == "exception_during_validation"
    verdict = env.client.post("/jobs:validate", json=request).get_json()
    assert verdict["valid"] is True and verdict["outputs_to_execute"] == ["2"]
    assert verdict["node_errors"]["6"]["class_type"] == "PreviewImage"
    stored = env.store.get_job(data["job_id"])
    assert stored.accepted_outputs == ["2"]  # the worker runs only these
    assert json.loads(stored.preflight_node_errors_json)["6"]["class_type"] == "PreviewImage"
