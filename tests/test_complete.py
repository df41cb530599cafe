"""The done-flag use case on in-memory fakes: completion, idempotency, stale and bad manifests."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from comfyburst.schema import ResultMessage
from comfyburst.services.complete import (
    StorageObject,
    handle_done_flag,
    parse_storage_event,
)
from comfyburst.states import JobState
from tests._completion_helpers import fake_completion_deps, lease_record, make_job, manifest

SIGNALS = "signals-b"
OUTPUTS = "outputs-b"


@pytest.fixture
def env():
    deps, clock = fake_completion_deps(SIGNALS, OUTPUTS)
    return deps, clock


def _running(deps, clock, job_id="j1", **kwargs):
    job = make_job(job_id, clock.now(), JobState.RUNNING, **kwargs)
    deps.store.create_job(job)
    deps.store.put_vm(lease_record(kwargs.get("vm", "gpu-1"), job_id, clock.now()), None)
    return job


def _flag(deps, job_id, body: bytes) -> StorageObject:
    name = f"jobs/{job_id}/done.json"
    generation = deps.blobs.write(SIGNALS, name, body, "application/json")
    return StorageObject(SIGNALS, name, generation, len(body))


def _messages(deps) -> list[ResultMessage]:
    return [ResultMessage.model_validate_json(data) for data, _ in deps.publisher.messages]


def test_success_completes_publishes_and_releases(env):
    deps, clock = env
    _running(deps, clock)
    clock.advance(30)
    done = manifest("j1", clock.now(), outputs=[("a.png", b"png-a"), ("b.png", b"png-b")])
    outcome = handle_done_flag(deps, _flag(deps, "j1", done.model_dump_json().encode()))

    assert outcome["outcome"] == "completed"
    job = deps.store.get_job("j1")
    assert job.state is JobState.SUCCEEDED
    assert job.finished_at == clock.now()
    assert [o.gs_uri for o in job.outputs] == [
        f"gs://{OUTPUTS}/jobs/j1/outputs/a.png",
        f"gs://{OUTPUTS}/jobs/j1/outputs/b.png",
    ]
    assert job.worker_timings.execution_s == 1.5
    assert job.result_published_at == clock.now()
    (message,) = _messages(deps)
    assert message.status is JobState.SUCCEEDED and message.attempt == 1
    assert (
        message.outputs[0].signed_url
        == f"https://signed.invalid/{OUTPUTS}/jobs/j1/outputs/a.png?ttl=3600"
    )
    assert message.timings.total_s == 30.0
    assert deps.publisher.messages[0][1] == {"job_id": "j1", "status": "succeeded"}
    record, _ = deps.store.get_vm("gpu-1")
    assert record.lease is None and record.last_seen == done.written_at


def test_duplicate_delivery_completes_once(env):
    deps, clock = env
    _running(deps, clock)
    obj = _flag(deps, "j1", manifest("j1", clock.now()).model_dump_json().encode())
    first = handle_done_flag(deps, obj)
    clock.advance(5)
    second = handle_done_flag(deps, obj)
    assert (first["outcome"], second["outcome"]) == ("completed", "duplicate")
    assert len(deps.publisher.messages) == 1
    assert deps.store.get_job("j1").finished_at == clock.now() - timedelta(seconds=5)


def test_publish_failure_raises_then_redelivery_sends_the_same_message(env):
    deps, clock = env
    _running(deps, clock)
    obj = _flag(
        deps,
        "j1",
        manifest("j1", clock.now(), outputs=[("a.png", b"x")]).model_dump_json().encode(),
    )
    deps.publisher.fail_next = 1
    with pytest.raises(RuntimeError):
        handle_done_flag(deps, obj)
    job = deps.store.get_job("j1")
    assert job.state is JobState.SUCCEEDED and job.result_published_at is None
    assert deps.store.get_vm("gpu-1")[0].lease is not None  # released only after publishing
    stored_body = job.result.model_dump_json().encode()

    clock.advance(20)  # a later signature would differ; the stored message must not
    outcome = handle_done_flag(deps, obj)
    assert outcome["outcome"] == "republished"
    assert [data for data, _ in deps.publisher.messages] == [stored_body]
    assert deps.store.get_job("j1").finished_at == job.finished_at
    assert deps.store.get_vm("gpu-1")[0].lease is None
    assert handle_done_flag(deps, obj)["outcome"] == "duplicate"
    assert len(deps.publisher.messages) == 1


def test_stale_attempt_is_ignored(env):
    deps, clock = env
    _running(deps, clock, attempt=2)
    outcome = handle_done_flag(
        deps, _flag(deps, "j1", manifest("j1", clock.now(), attempt=1).model_dump_json().encode())
    )
    assert outcome["outcome"] == "stale"
    assert deps.store.get_job("j1").state is JobState.RUNNING
    assert deps.publisher.messages == []
    assert deps.store.get_vm("gpu-1")[0].lease.job_id == "j1"


def test_failed_manifest_carries_the_error(env):
    deps, clock = env
    _running(deps, clock)
    error = {"type": "execution_error", "message": "boom", "node_id": "3"}
    body = manifest("j1", clock.now(), status="failed", error=error).model_dump_json().encode()
    handle_done_flag(deps, _flag(deps, "j1", body))
    job = deps.store.get_job("j1")
    assert job.state is JobState.FAILED and job.error.node_id == "3"
    assert _messages(deps)[0].error.message == "boom"


def test_next_job_keeps_the_lease(env):
    deps, clock = env
    _running(deps, clock)
    body = manifest("j1", clock.now(), next_job_id="j2").model_dump_json().encode()
    assert handle_done_flag(deps, _flag(deps, "j1", body))["released"] is False
    assert deps.store.get_vm("gpu-1")[0].lease.job_id == "j1"


def test_lease_pointing_elsewhere_is_left(env):
    deps, clock = env
    _running(deps, clock)
    _, version = deps.store.get_vm("gpu-1")
    deps.store.put_vm(lease_record("gpu-1", "other", clock.now()), version)
    handle_done_flag(
        deps, _flag(deps, "j1", manifest("j1", clock.now()).model_dump_json().encode())
    )
    assert deps.store.get_vm("gpu-1")[0].lease.job_id == "other"


def test_starting_job_with_success_passes_through_running(env):
    deps, clock = env
    job = make_job("j1", clock.now(), JobState.STARTING)
    deps.store.create_job(job)
    clock.advance(3)
    handle_done_flag(
        deps, _flag(deps, "j1", manifest("j1", clock.now()).model_dump_json().encode())
    )
    stored = deps.store.get_job("j1")
    assert stored.state is JobState.SUCCEEDED and stored.started_at == clock.now()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "does not match the DoneManifest schema"),
        (json.dumps({"job_id": "j1", "attempt": 1}).encode(), "status: Field required"),
        (
            json.dumps(
                {
                    "job_id": "j1",
                    "attempt": 1,
                    "vm": "gpu-1",
                    "status": "failed",
                    "written_at": "2026-11-28T12:00:00Z",
                }
            ).encode(),
            "a failed manifest must carry an error",
        ),
    ],
)
def test_invalid_manifest_fails_the_job_clearly(env, body, fragment):
    deps, clock = env
    _running(deps, clock)
    outcome = handle_done_flag(deps, _flag(deps, "j1", body))
    assert outcome["outcome"] == "manifest_invalid"
    job = deps.store.get_job("j1")
    assert job.state is JobState.FAILED
    assert job.error.type == "manifest_invalid" and fragment in job.error.message
    assert _messages(deps)[0].error.type == "manifest_invalid"
    assert deps.store.get_vm("gpu-1")[0].lease is None
    # Delivered again: nothing more happens.
    assert handle_done_flag(deps, _flag(deps, "j1", body))["outcome"] == "duplicate"
    assert len(deps.publisher.messages) == 1


def test_invalid_manifest_of_an_older_attempt_is_stale(env):
    deps, clock = env
    _running(deps, clock, attempt=2)
    outcome = handle_done_flag(deps, _flag(deps, "j1", b'{"job_id": "j1", "attempt": 1}'))
    assert outcome["outcome"] == "stale"
    assert deps.store.get_job("j1").state is JobState.RUNNING


def test_manifest_naming_another_job_is_invalid(env):
    deps, clock = env
    _running(deps, clock)
    body = manifest("j2", clock.now()).model_dump_json().encode()
    handle_done_flag(deps, _flag(deps, "j1", body))
    assert "names job 'j2'" in deps.store.get_job("j1").error.message


def test_outputs_outside_the_job_prefix_are_relocated(env):
    deps, clock = env
    _running(deps, clock)
    done = manifest("j1", clock.now(), outputs=[("a.png", b"x")])
    done.outputs[0].gs_uri = "gs://secret-bucket/payroll.csv"
    handle_done_flag(deps, _flag(deps, "j1", done.model_dump_json().encode()))
    assert deps.store.get_job("j1").outputs[0].gs_uri == f"gs://{OUTPUTS}/jobs/j1/outputs/a.png"


@pytest.mark.parametrize(
    "name",
    ["jobs/j1/request.json", "jobs/j1/done.json.tmp", "other/j1/done.json", "jobs//done.json"],
)
def test_other_objects_are_ignored(env, name):
    deps, clock = env
    _running(deps, clock)
    assert handle_done_flag(deps, StorageObject(SIGNALS, name))["outcome"] == "ignored"
    assert deps.store.get_job("j1").state is JobState.RUNNING


def test_other_bucket_and_unknown_job_and_missing_object(env):
    deps, clock = env
    assert handle_done_flag(deps, StorageObject("x", "jobs/j1/done.json"))["outcome"] == "ignored"
    assert handle_done_flag(deps, StorageObject(SIGNALS, "jobs/j9/done.json"))["outcome"] == (
        "unknown_job"
    )
    _running(deps, clock)
    assert handle_done_flag(deps, StorageObject(SIGNALS, "jobs/j1/done.json"))["outcome"] == (
        "missing"
    )


def test_terminal_job_late_flag_is_a_no_op(env):
    deps, clock = env
    job = make_job("j1", clock.now(), JobState.CANCELLED)
    deps.store.create_job(job.model_copy(update={"result_published_at": clock.now()}))
    outcome = handle_done_flag(
        deps, _flag(deps, "j1", manifest("j1", clock.now()).model_dump_json().encode())
    )
    assert outcome["outcome"] == "duplicate"
    assert deps.store.get_job("j1").state is JobState.CANCELLED


def test_parse_storage_event_cloud_shape():
    data = {
        "bucket": "b",
        "name": "jobs/x/done.json",
        "generation": "1700000000000001",
        "size": "42",
        "contentType": "application/json",
    }
    assert parse_storage_event(data) == StorageObject("b", "jobs/x/done.json", 1700000000000001, 42)


def test_parse_storage_event_falls_back_to_source_and_subject():
    obj = parse_storage_event(
        {"generation": "garbage"},
        source="//storage.googleapis.com/projects/_/buckets/sig",
        subject="objects/jobs/x/done.json",
    )
    assert obj == StorageObject("sig", "jobs/x/done.json", None, None)
    assert parse_storage_event(None, source="weird", subject="weird") == StorageObject("", "")
