"""Comfy API v2 bodies and envelope, as pure functions: the status mapping, output assets,
each of our errors under the contract's code, the label rules (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from comfy_low.models import ErrorEnvelope
from comfy_low.models import Job as SdkJob

from comfyburst.api._v2_errors import error_answer
from comfyburst.api._v2_models import V2Job
from comfyburst.api._v2_views import asset_id, job_body, parse_asset_id, v2_status
from comfyburst.domain.job_query import JobQuery
from comfyburst.domain.jobs import new_job, transition
from comfyburst.domain.labels import LabelError, check_filters, check_labels, label_pairs
from comfyburst.domain.ops_metrics import PHASES
from comfyburst.errors import (
    Forbidden,
    GpuClassForbidden,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    PreflightRejected,
    QueueFull,
    Unauthenticated,
)
from comfyburst.schema import Job, JobPhases, JobRequest, OutputFile
from comfyburst.services import job_list
from comfyburst.states import JobState
from tests._api_support import WORKFLOW
from tests.deploy import hcl

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _job_in(state: JobState, **changes: object) -> Job:
    job = new_job(
        job_id="j1",
        request=JobRequest.model_validate({"workflow": WORKFLOW}),
        workflow_bytes=100,
        now=NOW,
        max_attempts=3,
        ttl_days=7,
    )
    if state is not JobState.QUEUED:
        job = transition(job, state, NOW + timedelta(seconds=5))
    return job.model_copy(update=changes)


@pytest.mark.parametrize(
    ("state", "cancel_requested", "expected"),
    [
        (JobState.QUEUED, False, "queued"),
        (JobState.STARTING, False, "queued"),
        (JobState.RUNNING, False, "running"),
        (JobState.RUNNING, True, "canceling"),
        (JobState.STARTING, True, "canceling"),
        (JobState.SUCCEEDED, False, "succeeded"),
        (JobState.CANCELLED, True, "canceled"),
        (JobState.FAILED, False, "failed"),
        (JobState.TIMED_OUT, False, "expired"),
    ],
)
def test_status_mapping(state: JobState, cancel_requested: bool, expected: str) -> None:
    job = _job_in(JobState.QUEUED).model_copy(
        update={"state": state, "cancel_requested": cancel_requested}
    )
    assert v2_status(job) == expected


def test_a_succeeded_job_reads_as_the_sdk_model_with_its_output_as_an_asset() -> None:
    output = OutputFile(
        name="cb_00001_.png",
        size_bytes=12,
        sha256="0" * 64,
        content_type="image/png",
        gs_uri="gs://out/jobs/j1/cb_00001_.png",
        signed_url="http://127.0.0.1:1/out/x?sig=1",
        signed_url_expires_at=NOW + timedelta(hours=1),
    )
    job = _job_in(JobState.RUNNING, accepted_outputs=["2"])
    job = transition(job, JobState.SUCCEEDED, NOW + timedelta(seconds=9), outputs=[output])
    parsed = SdkJob.model_validate(job_body(job))  # the SDK's own model of a job
    assert parsed.status.value == "succeeded" and parsed.completed_at is not None
    (out,) = parsed.outputs
    assert (out.node_id, out.type.value, out.id) == ("2", "image", asset_id("j1", 0))
    assert parse_asset_id(out.id) == ("j1", 0)
    assert parsed.expires_at == NOW + timedelta(days=7)
    assert parsed.urls.cancel == "/api/v2/jobs/j1/cancel"
    assert parse_asset_id("out-x-j1") is None and parse_asset_id("../j1") is None


def test_an_animated_webp_from_a_second_output_node_is_a_video_of_that_node() -> None:
    """ComfyUI's `animated` flag, kept per output by the worker, types an image/webp `video`."""
    common = {"size_bytes": 12, "sha256": "0" * 64, "signed_url": "http://127.0.0.1:1/o?s=1"}
    still = OutputFile(name="a.png", content_type="image/png", node_id="3", **common)
    anim = OutputFile(
        name="b.webp", content_type="image/webp", node_id="4", animated=True, **common
    )
    old = OutputFile(name="c.webp", content_type="image/webp", **common)  # before the flag
    job = _job_in(JobState.RUNNING, accepted_outputs=["3", "4"])
    job = transition(job, JobState.SUCCEEDED, NOW, outputs=[still, anim, old])
    parsed = SdkJob.model_validate(job_body(job))
    got = [(o.node_id, o.type.value) for o in parsed.outputs]
    assert got == [("3", "image"), ("4", "video"), ("", "image")]


def test_metrics_carry_queue_execution_and_each_cold_start_phase() -> None:
    at = {
        "requested_at": 0, "running_at": 20, "guest_booted_at": 25, "agent_up_at": 30,
        "claimed_at": 31, "comfyui_ready_at": 40, "models_ready_at": 41.5,
        "first_step_at": 42, "done_at": 50,
    }  # fmt: skip
    phases = JobPhases(**{k: NOW + timedelta(seconds=s) for k, s in at.items()})
    job = _job_in(JobState.RUNNING, phases=phases, dispatched_at=NOW + timedelta(seconds=1))
    job = transition(job, JobState.SUCCEEDED, NOW + timedelta(seconds=51))
    metrics = SdkJob.model_validate(job_body(job)).metrics
    assert metrics is not None
    assert (metrics["queue_ms"], metrics["execution_ms"]) == (1000, 46000)
    assert {name: metrics[f"{name}_ms"] for name in PHASES} == {
        "vm_start": 20000, "guest_boot": 5000, "agent_start": 5000, "claim": 1000,
        "comfyui_start": 9000, "environment": None, "models": 1500, "first_step": 500,
        "run": 8000,
    }  # fmt: skip
    # A queued job: every key there, each null until known; the served schema names each.
    queued = job_body(_job_in(JobState.QUEUED))["metrics"]
    assert queued == {"queue_ms": None, "boot_ms": None, "execution_ms": None} | {
        f"{name}_ms": None for name in PHASES
    }
    described = V2Job.model_fields["metrics"].description or ""
    assert all(f"{name}_ms" in described for name in PHASES)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (Unauthenticated("no key"), 401, "unauthorized"),
        (Forbidden("bad key"), 403, "forbidden"),
        (GpuClassForbidden("no", gpu_class="h100", allowed=["t4"]), 403, "forbidden"),
        (NotFound("job x not found"), 404, "not_found"),
        (QueueFull("full", max_queued=1, retry_after_s=60), 429, "queue_full"),
        (IdempotencyConflict("used"), 422, "idempotency_key_reuse"),
        (InvalidRequest("workflow.1: bad", field="workflow.1"), 422, "invalid_workflow"),
        (InvalidRequest("Idempotency-Key bad", field="Idempotency-Key"), 400, "invalid_request"),
        (RuntimeError("secret detail"), 500, "upstream_error"),
    ],
)
def test_each_error_under_the_contract_code(exc: Exception, status: int, code: str) -> None:
    got_status, body = error_answer(exc, budget_bytes=16 * 1024)
    assert (got_status, body["error"]["code"]) == (status, code)
    ErrorEnvelope.model_validate(body)  # the SDK's model of the envelope
    assert "secret" not in body["error"]["message"]


def test_preflight_node_errors_ride_in_details_bounded() -> None:
    node_errors = {str(n): {"errors": [{"type": "x", "message": "m" * 500}]} for n in range(400)}
    exc = PreflightRejected({"message": "Prompt outputs failed validation"}, node_errors)
    status, body = error_answer(exc, budget_bytes=32 * 1024)
    details = body["error"]["details"]
    assert status == 422 and body["error"]["code"] == "invalid_workflow"
    assert 0 < len(details["node_errors"]) < 400
    assert details["node_errors_omitted"] == 400 - len(details["node_errors"])


def test_label_rules_and_filters_as_stored_texts() -> None:
    assert check_labels({"client": "acme", "a.b-c_1": "é" * 128}) == {
        "client": "acme",
        "a.b-c_1": "é" * 128,
    }
    for bad in ({"": "x"}, {"a=b": "x"}, {"k": "\u2066"}, {"k": "\x7f"}, {"k": 1}, ["k"]):
        with pytest.raises(LabelError):
            check_labels(bad)
    assert check_filters([("b", "2"), ("a", "1=1")]) == ("a=1=1", "b=2")
    assert label_pairs({"b": "2", "a": "1"}) == ["a=1", "b=2"]
    # A token made for one label filter is not taken for another (nor for none).
    key = b"k" * 32
    labelled = JobQuery(owner="ana", labels=("a=1",))
    token = job_list.encode_token(labelled, _job_in(JobState.QUEUED), key)
    assert job_list.decode_token(token, labelled, key).job_id
    for other in (JobQuery(owner="ana", labels=("a=2",)), JobQuery(owner="ana")):
        with pytest.raises(InvalidRequest):
            job_list.decode_token(token, other, key)


def test_label_list_queries_have_their_composite_indexes() -> None:
    # FirestoreJobViews.list_page with labels: [caller ==] label_pairs array-contains, ordered
    # by created_at then document id, both descending.
    indexes = hcl.locals_()["job_label_indexes"]
    assert sorted(map(tuple, indexes.values())) == [(), ("caller",)]
    index = hcl.resources("google_firestore_index")["jobs_labels"]
    fields = [(f["field_path"], f.get("order"), f.get("array_config")) for f in index["fields"]]
    assert fields == [
        ("label_pairs", None, "CONTAINS"),
        ("created_at", "DESCENDING", None),
        ("__name__", "DESCENDING", None),
    ]
    assert index["collection"] == "jobs"
