"""The done-flag path on the local cloud, without a worker: done.json written to the signals
bucket -> fake-gcs notification -> the Eventarc stand-in -> `on_done_flag` -> Firestore,
the results topic, signed URLs served by the GCS emulator, the VM lease."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from comfyburst.adapters.clock import SystemClock
from comfyburst.schema import ResultMessage
from comfyburst.states import JobState
from tests._completion_helpers import lease_record, make_job, manifest
from tests._poll import poll_until
from tests.test_complete_function import post_binary, post_structured

pytestmark = pytest.mark.emulator


@pytest.fixture
def results_sub(function_settings, subscriber) -> Iterator[str]:
    """A fresh subscription on the results topic, so only this test's messages count."""
    project = function_settings.project_id
    path = subscriber.subscription_path(project, f"test-results-{uuid.uuid4().hex[:12]}")
    topic = f"projects/{project}/topics/{function_settings.results_topic}"
    subscriber.create_subscription(request={"name": path, "topic": topic})
    yield path
    subscriber.delete_subscription(request={"subscription": path})


def pull_all(subscriber, path: str, job_id: str, wait_s: float) -> list[ResultMessage]:
    """Every message for `job_id` that arrives within `wait_s` (acked)."""
    found: list[ResultMessage] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        response = subscriber.pull(request={"subscription": path, "max_messages": 10}, timeout=5)
        if response.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": path,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
        for received in response.received_messages:
            if received.message.attributes.get("job_id") == job_id:
                found.append(ResultMessage.model_validate_json(received.message.data))
        if not response.received_messages:
            time.sleep(0.02)
    return found


@pytest.fixture(scope="module", autouse=True)
def warm_trigger(localcloud_env) -> None:
    """One ignored event first, so the function instance has built its clients (a warm
    instance, as in the cloud with min instances); a cold build is not what is measured."""
    client = SessionClient(requests.Session(), os.environ["COMFYBURST_ON_DONE_FLAG_URL"])
    bucket = os.environ["COMFYBURST_SIGNALS_BUCKET"]
    response = post_binary(client, bucket, "warm-up/not-a-done-flag", 1, 1)
    assert response.status_code == 200


def running_job(job_store, job_id: str, vm: str):
    """A running job and its lease, as a dispatch and a worker's claim would leave them.

    The VM name is outside the Compute pool, so the local cloud's own reaper (real time,
    default thresholds) sees nothing to do while the test runs.
    """
    now = SystemClock().now()
    job = make_job(job_id, now, JobState.RUNNING, vm=vm)
    job_store.create_job(job)
    job_store.put_vm(lease_record(vm, job_id, now), None)
    return job


def test_done_flag_through_eventarc_completes_once(
    function_settings, job_store, blob_store, subscriber, results_sub
):
    job_id, vm = f"cmp-{uuid.uuid4().hex[:10]}", f"test-vm-{uuid.uuid4().hex[:6]}"
    running_job(job_store, job_id, vm)
    png = b"\x89PNG fake output bytes " + job_id.encode()
    blob_store.write(
        function_settings.outputs_bucket, f"jobs/{job_id}/outputs/img_00001.png", png, "image/png"
    )
    body = (
        manifest(job_id, SystemClock().now(), vm=vm, outputs=[("img_00001.png", png)])
        .model_dump_json()
        .encode()
    )

    # How fast the trigger completes a job is measured by tests/bench/bench_completion.py.
    generation = blob_store.write(
        function_settings.signals_bucket, f"jobs/{job_id}/done.json", body, "application/json"
    )
    job = poll_until(
        lambda: (j := job_store.get_job(job_id)) and j.state is JobState.SUCCEEDED and j,
        "the job to succeed",
        timeout_s=30.0,
        interval_s=0.01,
    )
    assert job.outputs[0].gs_uri == (
        f"gs://{function_settings.outputs_bucket}/jobs/{job_id}/outputs/img_00001.png"
    )
    # The lease is released after the result is published, a moment after the state change
    # (several emulator round trips: generous on a busy machine).
    poll_until(
        lambda: job_store.get_vm(vm)[0].lease is None,
        "the lease release",
        timeout_s=30.0,
        interval_s=0.01,
    )

    # The same event delivered again, straight to the function (binary and structured mode).
    client = SessionClient(requests.Session(), os.environ["COMFYBURST_ON_DONE_FLAG_URL"])
    for post in (post_binary, post_structured):
        response = post(
            client,
            function_settings.signals_bucket,
            f"jobs/{job_id}/done.json",
            generation,
            len(body),
        )
        assert response.status_code == 200

    messages = pull_all(subscriber, results_sub, job_id, wait_s=1.5)
    assert len(messages) == 1
    (message,) = messages
    assert message.status is JobState.SUCCEEDED
    fetched = requests.get(message.outputs[0].signed_url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == png
    assert job_store.get_job(job_id).finished_at == job.finished_at


def test_malformed_manifest_fails_the_job_clearly(
    function_settings, job_store, blob_store, subscriber, results_sub
):
    job_id, vm = f"bad-{uuid.uuid4().hex[:10]}", f"test-vm-{uuid.uuid4().hex[:6]}"
    running_job(job_store, job_id, vm)
    body = json.dumps({"job_id": job_id, "attempt": 1, "status": "exploded"}).encode()
    blob_store.write(
        function_settings.signals_bucket, f"jobs/{job_id}/done.json", body, "application/json"
    )
    job = poll_until(
        lambda: (j := job_store.get_job(job_id)) and j.state is JobState.FAILED and j,
        "the job to fail",
        timeout_s=30.0,
        interval_s=0.01,
    )
    assert job.error.type == "manifest_invalid"
    assert "status: Input should be" in job.error.message
    assert "vm: Field required" in job.error.message
    # The result is published before the lease is released (services/complete.py _invalid):
    # once the lease is gone, the message is there to pull.
    poll_until(
        lambda: job_store.get_vm(vm)[0].lease is None,
        "the lease release",
        timeout_s=30.0,
        interval_s=0.01,
    )
    (message,) = pull_all(subscriber, results_sub, job_id, wait_s=1.5)
    assert message.error.type == "manifest_invalid"


class SessionClient:
    """`post(path, data, headers)` against a base URL, like werkzeug's test client."""

    def __init__(self, session: requests.Session, base: str) -> None:
        self._session, self._base = session, base.rstrip("/")

    def post(self, path: str, data: Any, headers: dict[str, str]) -> requests.Response:
        return self._session.post(self._base + path, data=data, headers=headers, timeout=30)
