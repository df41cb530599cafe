"""Comfy API v2 through the app of functions/main.py on the emulators, with two API keys sent
as `Authorization: Bearer`: each error code of the contract's envelope, nothing written on a
refusal, single-use Idempotency-Keys, the status mapping and the caller's own list."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from comfy_low.sse import RawEvent
from comfy_sdk.events import Preview, event_from_raw
from PIL import Image

from comfyburst.api._v2_events import MAX_STREAMS_PER_CALLER, RETRY_AFTER_S
from comfyburst.domain.caller_limits import QUEUE_FULL_RETRY_AFTER_S
from comfyburst.domain.jobs import transition
from comfyburst.domain.previews import preview_object
from comfyburst.schema import Progress
from comfyburst.states import JobState
from tests._api_support import WORKFLOW
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.emulator

KEYS = {"ana": "key-ana-v2", "bo": "key-bo-v2"}
TEMPLATE = "projects/P/regions/zone/instanceTemplates/none"
# No class may create a VM and the pool label matches none: jobs stay queued.
CLASSES = [{"name": "t4", "zones": ["zone-a"], "templates": {"zone": TEMPLATE}, "max_vms": 0}]
UI_EXPORT = {
    "last_node_id": 2,
    "last_link_id": 1,
    "nodes": [{"id": 1}],
    "links": [],
    "version": 0.4,
}


@pytest.fixture
def cloud(settings: Any, standin: Any, blob_store: Any, signer: Any, publisher: Any) -> Cloud:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    keyed = type(settings).model_validate(
        {
            **settings.model_dump(),
            "auth_mode": "api_key",
            "api_key_hashes": [
                f"{name}={hashlib.sha256(key.encode()).hexdigest()}" for name, key in KEYS.items()
            ],
            "jobs_collection": f"v2_jobs_{suffix}",
            "vms_collection": f"v2_vms_{suffix}",
            "idempotency_collection": f"v2_idem_{suffix}",
            "pool_label": "comfyburst-pool=no-such-pool",
            "gpu_classes": CLASSES,
            "caller_limits": {"default": {"max_queued": 2}},
        }
    )
    return Cloud(keyed, standin, blob_store, signer, publisher)


def _as(who: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}", **headers}


def _submit(cloud: Cloud, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return cloud.client.post(
        "/api/v2/jobs", data=data, headers=headers, content_type="application/json"
    )


def _workflow() -> dict[str, Any]:
    return json.loads(json.dumps(WORKFLOW))


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


def test_submit_answers_201_with_the_v2_job_and_get_reads_it_back(cloud: Cloud) -> None:
    created = _submit(cloud, {"workflow": _workflow()}, **_as("ana", **{"Idempotency-Key": "a1"}))
    assert created.status_code == 201, created.get_json()
    job = created.get_json()
    assert job["status"] == "queued" and job["outputs"] == [] and job["error"] is None
    assert job["urls"]["self"] == f"/api/v2/jobs/{job['id']}"
    assert created.headers["Location"] == job["urls"]["self"]
    assert job["expires_at"] > job["created_at"]
    again = cloud.client.get(job["urls"]["self"], headers=_as("ana"))
    assert again.status_code == 200 and again.get_json()["id"] == job["id"]


def test_unauthorized_and_forbidden_write_nothing(cloud: Cloud) -> None:
    _error(_submit(cloud, {"workflow": _workflow()}), 401, "unauthorized")
    wrong = {"Authorization": "Bearer not-a-key"}
    _error(_submit(cloud, {"workflow": _workflow()}, **wrong), 403, "forbidden")
    _error(cloud.client.get("/api/v2/jobs", headers=wrong), 403, "forbidden")
    assert cloud.nothing_written()


def test_a_ui_format_workflow_is_refused_as_such(cloud: Cloud) -> None:
    response = _submit(cloud, {"workflow": UI_EXPORT}, **_as("ana", **{"Idempotency-Key": "u"}))
    _error(response, 422, "workflow_format_ui")
    assert cloud.nothing_written()


def test_preflight_errors_are_invalid_workflow_with_node_errors(cloud: Cloud) -> None:
    workflow = _workflow()
    workflow["1"]["inputs"]["width"] = 10**9
    response = _submit(cloud, {"workflow": workflow}, **_as("ana", **{"Idempotency-Key": "p"}))
    error = _error(response, 422, "invalid_workflow")
    node = error["details"]["node_errors"]["1"]
    assert node["errors"][0]["type"] == "value_bigger_than_max"
    assert cloud.nothing_written()
    # The refused submit did not claim the key: fixed, the same key is accepted.
    fixed = _submit(cloud, {"workflow": _workflow()}, **_as("ana", **{"Idempotency-Key": "p"}))
    assert fixed.status_code == 201, fixed.get_json()


def test_a_reused_idempotency_key_is_refused_same_body_or_not(cloud: Cloud) -> None:
    headers = _as("ana", **{"Idempotency-Key": "once"})
    assert _submit(cloud, {"workflow": _workflow()}, **headers).status_code == 201
    _error(_submit(cloud, {"workflow": _workflow()}, **headers), 422, "idempotency_key_reuse")
    other = _workflow()
    other["1"]["inputs"]["width"] = 32
    _error(_submit(cloud, {"workflow": other}, **headers), 422, "idempotency_key_reuse")
    assert len(cloud.jobs()) == 1
    # Keys are the caller's own: bo's "once" is a different key.
    bo = _submit(cloud, {"workflow": _workflow()}, **_as("bo", **{"Idempotency-Key": "once"}))
    assert bo.status_code == 201


def test_a_full_queue_answers_queue_full_with_retry_after(cloud: Cloud) -> None:
    for n in range(2):
        key = {"Idempotency-Key": f"q{n}"}
        assert _submit(cloud, {"workflow": _workflow()}, **_as("ana", **key)).status_code == 201
    before = sorted(j.job_id for j in cloud.jobs())
    full = _submit(cloud, {"workflow": _workflow()}, **_as("ana", **{"Idempotency-Key": "q2"}))
    _error(full, 429, "queue_full")
    assert full.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_S)
    assert sorted(j.job_id for j in cloud.jobs()) == before
    # The refusal released the key: once a slot is free, its retry is accepted.
    freed = cloud.client.post(f"/api/v2/jobs/{before[0]}/cancel", headers=_as("ana"))
    assert freed.get_json()["status"] == "canceled"
    retried = _submit(cloud, {"workflow": _workflow()}, **_as("ana", **{"Idempotency-Key": "q2"}))
    assert retried.status_code == 201, retried.get_json()


def test_another_caller_gets_not_found_and_an_empty_list(cloud: Cloud) -> None:
    job = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()
    for path in (f"/api/v2/jobs/{job['id']}", "/api/v2/jobs/no-such-job"):
        _error(cloud.client.get(path, headers=_as("bo")), 404, "not_found")
    _error(cloud.client.post(f"{job['urls']['cancel']}", headers=_as("bo")), 404, "not_found")
    _error(
        cloud.client.get("/api/v2/assets/out-0-" + job["id"], headers=_as("bo")), 404, "not_found"
    )
    assert cloud.client.get("/api/v2/jobs", headers=_as("bo")).get_json() == {"jobs": []}
    mine = cloud.client.get("/api/v2/jobs?limit=1", headers=_as("ana")).get_json()
    assert [item["id"] for item in mine["jobs"]] == [job["id"]]
    assert mine["jobs"][0]["status"] == "queued" and "next_cursor" not in mine
    assert cloud.store.get_job(job["id"]).state is JobState.QUEUED


def test_cancel_maps_onto_canceling_and_canceled(cloud: Cloud) -> None:
    queued = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()
    running = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()
    cloud.store.update_job(running["id"], lambda j: transition(j, JobState.RUNNING, j.created_at))
    answer = cloud.client.post(queued["urls"]["cancel"], headers=_as("ana"))
    assert answer.status_code == 200 and answer.get_json()["status"] == "canceled"
    asked = cloud.client.post(running["urls"]["cancel"], headers=_as("ana")).get_json()
    assert asked["status"] == "canceling"
    # Cancelling a finished job is a no-op answering its terminal state.
    again = cloud.client.post(queued["urls"]["cancel"], headers=_as("ana"))
    assert again.status_code == 200 and again.get_json()["status"] == "canceled"


def test_logs_204_workflow_and_unknown_routes_404(cloud: Cloud) -> None:
    job = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()
    base = job["urls"]["self"]
    assert cloud.client.get(f"{base}/logs", headers=_as("ana")).status_code == 204
    ran = cloud.client.get(f"{base}/workflow", headers=_as("ana")).get_json()
    assert ran == {"workflow": _workflow(), "format": "api"}
    for tail in ("/logs", "/workflow", "/events"):
        _error(cloud.client.get(base + tail, headers=_as("bo")), 404, "not_found")
    _error(cloud.client.get("/api/v2/nothing", headers=_as("ana")), 404, "not_found")


def test_a_failing_dependency_answers_a_generic_upstream_error(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()

    def broken(bucket: str, name: str) -> bytes:
        raise RuntimeError(f"gs://{bucket}/{name}: connection reset")

    monkeypatch.setattr(cloud.deps.blobs, "read", broken)
    answer = cloud.client.get(f"{job['urls']['self']}/workflow", headers=_as("ana"))
    error = _error(answer, 500, "upstream_error")
    assert error == {"code": "upstream_error", "message": "the request could not be completed"}


def test_the_list_pages_with_limit_and_cursor(cloud: Cloud) -> None:
    ids = [_submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()["id"] for _ in "ab"]
    first = cloud.client.get("/api/v2/jobs?limit=1", headers=_as("ana")).get_json()
    second = cloud.client.get(
        "/api/v2/jobs",
        query_string={"limit": 1, "cursor": first["next_cursor"]},
        headers=_as("ana"),
    ).get_json()
    assert [first["jobs"][0]["id"], second["jobs"][0]["id"]] == ids[::-1]
    assert "next_cursor" not in second
    bad = cloud.client.get("/api/v2/jobs?limit=0", headers=_as("ana"))
    assert _error(bad, 400, "invalid_request")["details"]["field"] == "limit"
    _error(
        cloud.client.get("/api/v2/jobs?state=queued", headers=_as("ana")), 422, "invalid_request"
    )


def _frames(response: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) of each SSE frame as the stream delivers it (comments skipped)."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in frame.splitlines() if line[:1] != ":")
            if fields:
                yield fields["event"], json.loads(fields["data"])


def test_events_stream_the_status_then_the_change_then_end(cloud: Cloud) -> None:
    job = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()
    stream = cloud.client.get(job["urls"]["events"], headers=_as("ana"), buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    frames = _frames(stream)
    assert next(frames) == ("status", {"status": "queued", "queue_position": None})
    assert cloud.client.post(job["urls"]["cancel"], headers=_as("ana")).status_code == 200
    assert list(frames) == [("status", {"status": "canceled", "queue_position": None})]
    stream.close()
    # A finished job's stream is its terminal status alone.
    again = cloud.client.get(job["urls"]["events"], headers=_as("ana"), buffered=False)
    assert list(_frames(again)) == [("status", {"status": "canceled", "queue_position": None})]
    again.close()


def test_too_many_open_streams_answer_429_with_retry_after(cloud: Cloud) -> None:
    job = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()
    url = job["urls"]["events"]
    opened = [
        cloud.client.get(url, headers=_as("ana"), buffered=False)
        for _ in range(MAX_STREAMS_PER_CALLER)
    ]
    try:
        assert all(s.status_code == 200 for s in opened)
        refused = cloud.client.get(url, headers=_as("ana"), buffered=False)
        _error(refused, 429, "too_many_streams")
        assert refused.headers["Retry-After"] == str(RETRY_AFTER_S)
        opened.pop().close()
        opened.append(cloud.client.get(url, headers=_as("ana"), buffered=False))
        assert opened[-1].status_code == 200
    finally:
        for stream in opened:
            stream.close()


def test_events_send_the_latest_preview_on_connect_then_each_new_frame(cloud: Cloud) -> None:
    job = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()
    bucket, name = cloud.settings.outputs_bucket, preview_object(job["id"])

    def progressed(fraction: float) -> None:
        step = Progress(node="2", value=int(fraction * 10), max=10, fraction=fraction)
        cloud.store.update_job(job["id"], lambda j: j.model_copy(update={"progress": step}))

    cloud.store.update_job(job["id"], lambda j: transition(j, JobState.RUNNING, j.created_at))
    first, second = _png((250, 0, 0)), _png((0, 0, 250))
    cloud.blobs.write(bucket, name, first, content_type="image/png")
    stream = cloud.client.get(job["urls"]["events"], headers=_as("ana"), buffered=False)
    frames = _frames(stream)
    assert next(frames)[0] == "status" and next(frames)[0] == "progress"
    event, data = next(frames)
    preview = event_from_raw(RawEvent(event, data), None)  # as the SDK reads it
    assert isinstance(preview, Preview) and preview.data == first
    assert preview.content_type == "image/png"
    cloud.blobs.write(bucket, name, second, content_type="image/png")
    progressed(0.5)
    assert next(frames)[0] == "progress"
    event, data = next(frames)
    assert event == "preview" and base64.b64decode(data["data_base64"]) == second
    assert data["node_id"] == "2"
    progressed(0.7)  # the same frame is not sent again
    assert next(frames)[0] == "progress"
    cloud.store.update_job(job["id"], lambda j: transition(j, JobState.CANCELLED, j.created_at))
    assert list(frames) == [("status", {"status": "canceled", "queue_position": None})]
    stream.close()


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(out, format="PNG")
    return out.getvalue()
