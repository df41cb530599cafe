"""The `on_done_flag` and `reaper` entry points through functions-framework, on fakes.

The CloudEvents are shaped like the cloud's: binary and structured mode, int64 fields as
strings, `source` //storage.googleapis.com/projects/_/buckets/B, `subject` objects/NAME.
"""

from __future__ import annotations

import json
import sys

import pytest

from comfyburst.domain.reaper import ReaperPolicy
from comfyburst.services.reap import ReaperDeps
from comfyburst.states import JobState
from tests._api_support import MAIN_SOURCE
from tests._completion_helpers import fake_completion_deps, lease_record, make_job, manifest
from tests.fakes import (
    FakeFleet,
    FixedClock,
    InMemoryJobStore,
    InMemoryPublisher,
)

SIGNALS = "signals-b"


def storage_event(bucket: str, name: str, generation: int, size: int) -> dict:
    """The data of google.cloud.storage.object.v1.finalized as the cloud sends it."""
    return {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/{generation}",
        "name": name,
        "bucket": bucket,
        "generation": str(generation),
        "metageneration": "1",
        "contentType": "application/json",
        "size": str(size),
        "timeCreated": "2026-11-28T12:00:00.000Z",
        "updated": "2026-11-28T12:00:00.000Z",
    }


def ce_attributes(bucket: str, name: str, event_id: str = "evt-1") -> dict[str, str]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "type": "google.cloud.storage.object.v1.finalized",
        "subject": f"objects/{name}",
        "time": "2026-11-28T12:00:00.000Z",
    }


def post_binary(client, bucket: str, name: str, generation: int, size: int, event_id="evt-1"):
    headers = {f"ce-{k}": v for k, v in ce_attributes(bucket, name, event_id).items()}
    return client.post(
        "/",
        data=json.dumps(storage_event(bucket, name, generation, size)),
        headers={**headers, "Content-Type": "application/json"},
    )


def post_structured(client, bucket: str, name: str, generation: int, size: int):
    body = {
        **ce_attributes(bucket, name),
        "datacontenttype": "application/json",
        "data": storage_event(bucket, name, generation, size),
    }
    return client.post(
        "/", data=json.dumps(body), headers={"Content-Type": "application/cloudevents+json"}
    )


@pytest.fixture
def app_env():
    import functions_framework

    deps, clock = fake_completion_deps(SIGNALS, "outputs-b")
    app = functions_framework.create_app(
        target="on_done_flag", source=str(MAIN_SOURCE), signature_type="cloudevent"
    )
    sys.modules["main"].completion_deps.set(deps)
    yield deps, clock, app.test_client()
    sys.modules["main"].completion_deps.set(None)


def _setup(deps, clock, body: bytes | None = None):
    deps.store.create_job(make_job("j1", clock.now(), JobState.RUNNING))
    deps.store.put_vm(lease_record("gpu-1", "j1", clock.now()), None)
    body = body if body is not None else manifest("j1", clock.now()).model_dump_json().encode()
    generation = deps.blobs.write(SIGNALS, "jobs/j1/done.json", body, "application/json")
    return generation, len(body)


@pytest.mark.parametrize("post", [post_binary, post_structured])
def test_event_completes_the_job(app_env, post):
    deps, clock, client = app_env
    generation, size = _setup(deps, clock)
    response = post(client, SIGNALS, "jobs/j1/done.json", generation, size)
    assert response.status_code == 200, response.data
    assert deps.store.get_job("j1").state is JobState.SUCCEEDED
    assert len(deps.publisher.messages) == 1
    # The same event again (at-least-once delivery): 200, nothing more.
    assert post(client, SIGNALS, "jobs/j1/done.json", generation, size).status_code == 200
    assert len(deps.publisher.messages) == 1


def test_publish_failure_answers_500_so_the_event_comes_again(app_env):
    deps, clock, client = app_env
    generation, size = _setup(deps, clock)
    deps.publisher.fail_next = 1
    assert post_binary(client, SIGNALS, "jobs/j1/done.json", generation, size).status_code == 500
    assert post_binary(client, SIGNALS, "jobs/j1/done.json", generation, size).status_code == 200
    assert len(deps.publisher.messages) == 1
    assert deps.store.get_job("j1").result_published_at is not None


def test_bad_manifest_answers_200_and_fails_the_job(app_env):
    deps, clock, client = app_env
    generation, size = _setup(deps, clock, b'{"status": "succeeded"')
    assert post_binary(client, SIGNALS, "jobs/j1/done.json", generation, size).status_code == 200
    job = deps.store.get_job("j1")
    assert job.state is JobState.FAILED and job.error.type == "manifest_invalid"


def test_unrelated_objects_answer_200_untouched(app_env):
    deps, clock, client = app_env
    _setup(deps, clock)
    assert post_binary(client, SIGNALS, "jobs/j1/inputs/x.png", 5, 3).status_code == 200
    assert post_binary(client, "elsewhere", "jobs/j1/done.json", 5, 3).status_code == 200
    assert deps.store.get_job("j1").state is JobState.RUNNING


def test_reaper_function_answers_a_summary():
    import functions_framework

    clock = FixedClock()
    store, fleet, publisher = (
        InMemoryJobStore(),
        FakeFleet([("gpu-1", "zone-a")]),
        (InMemoryPublisher()),
    )
    fleet.start("zone-a", "gpu-1", "r")
    policy = ReaperPolicy(boot_timeout_s=10, heartbeat_timeout_s=10, max_attempts=2)
    app = functions_framework.create_app(target="reaper", source=str(MAIN_SOURCE))
    sys.modules["main"].reaper_deps.set((ReaperDeps(store, fleet, publisher, clock), policy))
    try:
        response = app.test_client().post("/", json={})
    finally:
        sys.modules["main"].reaper_deps.set(None)
    assert response.status_code == 200
    assert response.get_json()["counts"] == {"StopVm:applied": 1}
    assert fleet.get("zone-a", "gpu-1").status == "TERMINATED"
