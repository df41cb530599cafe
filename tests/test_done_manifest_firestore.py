"""Whatever error a worker reports in done.json, its job ends, on the real Firestore (the
emulator): the trigger (`on_done_flag`, through the Eventarc stand-in), the completion service
for any manifest a worker can write (a property test), and the reaper's late-done-flag path.

A real ComfyUI's refusal of a missing checkpoint carries `extra_info.input_config` with a list
inside a list, which Firestore refuses as a value ("Cannot convert an array value in an array
value"): stored as it came, the job never ended.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyburst.adapters.clock import SystemClock
from comfyburst.domain.json_safety import clip, clip_to, compact_json, json_size
from comfyburst.domain.manifest import (
    MAX_ERROR_TEXT_CHARS,
    MAX_STORED_DETAILS_BYTES,
    reported_error,
)
from comfyburst.domain.reaper import ReaperPolicy
from comfyburst.schema import DoneManifest, DoneStatus, Job, JobError, WorkerTimings
from comfyburst.services.complete import CompletionDeps, StorageObject, handle_done_flag
from comfyburst.services.reap import ReaperDeps, run_reaper
from comfyburst.states import JobState
from comfyburst_worker.prompt_errors import prompt_error
from tests._completion_helpers import lease_record, make_job
from tests._poll import poll_until

TRANSCRIPTS = Path(__file__).parent / "test_data" / "comfyui_api"

pytestmark = pytest.mark.emulator


def missing_checkpoint() -> tuple[dict[str, Any], dict[str, Any]]:
    """The workflow and a real ComfyUI 0.3.64's 400 body for a checkpoint it does not have."""
    cases = json.loads((TRANSCRIPTS / "prompt_errors.json").read_text())
    case = cases["missing_checkpoint_file"]
    return case["request"]["json"]["prompt"], case["response"]["json"]


def worker_error() -> JobError:
    """The error the worker reports for that answer (its own code, as it writes done.json)."""
    workflow, body = missing_checkpoint()
    return reported_error(prompt_error(400, body, workflow).job_error())


def done_json(job: Job, status: DoneStatus, error: JobError | None) -> bytes:
    """done.json as the agent writes it."""
    manifest = DoneManifest(
        job_id=job.job_id,
        attempt=job.attempt,
        vm=job.vm.name if job.vm else "gpu-x",
        status=status,
        error=error,
        timings=WorkerTimings(execution_s=0.5, total_s=1.0),
        written_at=SystemClock().now(),
    )
    return manifest.model_dump_json(exclude_none=True).encode()


def running_job(job_store: Any, prefix: str, **kwargs: Any) -> Job:
    """A running job and its VM lease; the VM is outside the Compute pool, so the local
    cloud's own reaper leaves it alone while the test runs."""
    job_id, vm = f"{prefix}-{uuid.uuid4().hex[:10]}", f"test-vm-{uuid.uuid4().hex[:6]}"
    now = SystemClock().now()
    job = make_job(job_id, now, JobState.RUNNING, vm=vm, **kwargs)
    job_store.create_job(job)
    job_store.put_vm(lease_record(vm, job_id, now), None)
    return job


@pytest.fixture(scope="module")
def flags_bucket(storage_client: Any) -> Iterator[str]:
    """A signals bucket no trigger watches: the service under test is the only reader."""
    name = f"test-flags-{uuid.uuid4().hex[:12]}"
    bucket = storage_client.create_bucket(name)
    yield name
    for blob in storage_client.list_blobs(name):
        blob.delete()
    bucket.delete()


@pytest.fixture
def completion(job_store, blob_store, signer, publisher, function_settings, flags_bucket):
    return CompletionDeps(
        store=job_store,
        blobs=blob_store,
        signer=signer,
        publisher=publisher,
        clock=SystemClock(),
        signals_bucket=flags_bucket,
        outputs_bucket=function_settings.outputs_bucket,
    )


def assert_ended_with(job: Job, status: DoneStatus, error: JobError) -> None:
    """Ended as the flag says, the error bounded and stored as Firestore takes it, and its
    result message (with that same error) published."""
    assert job.state is status.job_state, job.state
    assert job.error is not None and job.error.type == error.type
    assert job.error.message == clip(error.message, max_string=MAX_ERROR_TEXT_CHARS)
    if error.details is None:
        assert job.error.details is None
    else:
        stored = json.loads(job.error.details)
        assert stored == json.loads(compact_json(clip_to(error.details, MAX_STORED_DETAILS_BYTES)))
        assert json_size(stored) <= MAX_STORED_DETAILS_BYTES
    assert job.result is not None and job.result.error == job.error
    assert job.result_published_at is not None


def test_a_real_comfyui_refusal_ends_the_job_through_the_trigger(
    job_store, blob_store, function_settings, subscriber
):
    """The issue as it happened: done.json with a real ComfyUI's missing-checkpoint answer,
    through the Eventarc stand-in to on_done_flag; the job fails with the node's error."""
    project = function_settings.project_id
    sub = subscriber.subscription_path(project, f"test-done-{uuid.uuid4().hex[:12]}")
    topic = f"projects/{project}/topics/{function_settings.results_topic}"
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    try:
        job = running_job(job_store, "ckpt")
        error = worker_error()
        assert error.node_id == "1" and error.node_type == "CheckpointLoaderSimple"
        body = done_json(job, DoneStatus.FAILED, error)
        name = f"jobs/{job.job_id}/done.json"
        blob_store.write(function_settings.signals_bucket, name, body, "application/json")
        ended = poll_until(
            lambda: (j := job_store.get_job(job.job_id)) and j.result_published_at and j,
            "the job to end and its result to be published",
            timeout_s=60.0,
            interval_s=0.05,
        )
        assert_ended_with(ended, DoneStatus.FAILED, error)
        node = json.loads(ended.error.details)["node_errors"]["1"]
        assert node["errors"][0]["extra_info"]["input_config"][0] == [
            "tiny_sd15_random.safetensors"
        ]
        assert "Value not in list" in ended.error.message
        published = poll_until(
            lambda: _pulled(subscriber, sub, job.job_id), "the result message", timeout_s=30.0
        )
        assert published["status"] == "failed" and published["error"] == json.loads(
            ended.error.model_dump_json()
        )
        # Released after the publish, a moment after the state change.
        poll_until(lambda: job_store.get_vm(job.vm.name)[0].lease is None, "the lease release")
    finally:
        subscriber.delete_subscription(request={"subscription": sub})


def _pulled(subscriber: Any, sub: str, job_id: str) -> dict[str, Any] | None:
    response = subscriber.pull(request={"subscription": sub, "max_messages": 10}, timeout=5)
    found = None
    for received in response.received_messages:
        subscriber.acknowledge(request={"subscription": sub, "ack_ids": [received.ack_id]})
        if received.message.attributes.get("job_id") == job_id:
            found = json.loads(received.message.data)
    return found


_ODD_KEYS = st.sampled_from(["__x__", "", "a.b", "`q`", "__name__", "ü/ß", "*", "a" * 1600])
_KEYS = st.one_of(st.text(max_size=6), _ODD_KEYS)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=25,
)


def _nested(depth: int, leaf: Any) -> Any:
    """`leaf` under `depth` levels of alternating lists and objects (ComfyUI's is 4 deep)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 == 0 else {"k": value}
    return value


_DETAILS = st.one_of(
    st.none(),
    _JSON,
    st.builds(_nested, st.integers(1, 60), _JSON),
    # Large: near done.json's limit, twice over a Firestore document if stored as it came.
    st.integers(1, 3).map(lambda n: {"node_errors": {"1": {"details": "x" * (n * 280_000)}}}),
    st.just(missing_checkpoint()[1]),
)
_ERRORS = st.builds(
    JobError,
    type=st.sampled_from(["validation_error", "execution_error", "worker_error"]),
    message=st.one_of(st.text(max_size=40), st.integers(1, 3).map(lambda n: "m" * n * 100_000)),
    node_id=st.one_of(st.none(), st.text(max_size=8)),
    node_type=st.one_of(st.none(), st.text(max_size=20)),
    details=_DETAILS,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    status=st.sampled_from([DoneStatus.FAILED, DoneStatus.CANCELLED, DoneStatus.TIMED_OUT]),
    error=_ERRORS,
)
def test_any_reported_error_is_stored_and_the_job_ends(
    completion, job_store, blob_store, status, error
):
    job = running_job(job_store, "prop")
    body = done_json(job, status, error)
    blob_store.write(completion.signals_bucket, f"jobs/{job.job_id}/done.json", body, "x/json")
    outcome = handle_done_flag(
        completion, StorageObject(completion.signals_bucket, f"jobs/{job.job_id}/done.json")
    )
    ended = job_store.get_job(job.job_id)
    if outcome["outcome"] == "manifest_invalid":  # over done.json's size limit: refused, ended
        assert len(body) > 1_000_000 and ended.state is JobState.FAILED
        assert ended.error.type == "manifest_invalid" and ended.result_published_at is not None
        return
    assert outcome["outcome"] == "completed", outcome
    assert_ended_with(ended, status, error)


def test_the_reaper_completes_a_late_flag_with_such_an_error(
    job_store, blob_store, signer, publisher, fleet, function_settings, flags_bucket
):
    """A flag the trigger missed: the reaper reads it before timing the job out and
    completes the job from it, as the trigger would have."""
    job = running_job(job_store, "late", timeout_s=60)
    error = worker_error()
    body = done_json(job, DoneStatus.FAILED, error)
    blob_store.write(flags_bucket, f"jobs/{job.job_id}/done.json", body, "application/json")
    deps = ReaperDeps(
        job_store,
        fleet,
        publisher,
        SystemClock(),
        blobs=blob_store,
        signer=signer,
        signals_bucket=flags_bucket,
        outputs_bucket=function_settings.outputs_bucket,
    )
    policy = ReaperPolicy(boot_timeout_s=600, heartbeat_timeout_s=3600, max_attempts=3)
    summary = run_reaper(deps, policy, job.deadline_at + timedelta(seconds=5))
    mine = [a for a in summary["actions"] if a.get("job_id") == job.job_id]
    assert [a["action"] for a in mine] == ["CompleteFromDoneFlag"], summary["actions"]
    assert mine[0]["outcome"] == "applied", mine
    assert_ended_with(job_store.get_job(job.job_id), DoneStatus.FAILED, error)
