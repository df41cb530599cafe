"""GET /jobs/{id}, cancel, auth, errors, /openapi.json and /healthz through the app, on fakes."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import pytest

from comfyburst.domain.jobs import transition
from comfyburst.logs import JsonFormatter
from comfyburst.schema import OutputFile, ResultMessage
from comfyburst.states import JobState
from tests._api_support import body, fake_env


def _submit(env, **headers) -> str:  # type: ignore[no-untyped-def]
    response = env.submit(body(), **headers)
    assert response.status_code == 202
    return response.get_json()["job_id"]


def test_unknown_job_is_404_and_a_malformed_id_too() -> None:
    env = fake_env()
    for path in ("/jobs/nope", "/jobs/a.b", "/jobs/nope:cancel", "/nowhere"):
        method = env.client.post if path.endswith(":cancel") else env.client.get
        response = method(path)
        assert response.status_code == 404, path
        assert response.get_json()["error"]["code"] == "not_found"


def test_get_job_signs_outputs_and_refreshes_them_before_they_expire() -> None:
    env = fake_env()
    job_id = _submit(env)
    output = OutputFile(
        name="cb_00001_.png",
        size_bytes=10,
        sha256="0" * 64,
        content_type="image/png",
        gs_uri=f"gs://outputs-b/jobs/{job_id}/outputs/cb_00001_.png",
    )
    now = env.clock.now()
    env.store.update_job(
        job_id,
        lambda j: transition(
            transition(j, JobState.RUNNING, now), JobState.SUCCEEDED, now, outputs=[output]
        ),
    )
    first = env.client.get(f"/jobs/{job_id}").get_json()
    assert first["state"] == "succeeded"
    (out,) = first["outputs"]
    assert (
        out["signed_url"]
        == f"https://signed.invalid/outputs-b/jobs/{job_id}/outputs/cb_00001_.png?ttl=3600"
    )
    stored = env.store.get_job(job_id).outputs[0]
    assert stored.signed_url_expires_at == now + timedelta(seconds=3600)
    assert first["timings"]["total_s"] == 0.0
    # Still good for more than five minutes: kept. Within five minutes: signed again.
    env.clock.advance(3600 - 301)
    assert (
        env.client.get(f"/jobs/{job_id}").get_json()["outputs"][0]["signed_url_expires_at"]
        == out["signed_url_expires_at"]
    )
    env.clock.advance(2)
    refreshed = env.client.get(f"/jobs/{job_id}").get_json()["outputs"][0]
    assert refreshed["signed_url_expires_at"] != out["signed_url_expires_at"]
    assert env.store.get_job(job_id).outputs[
        0
    ].signed_url_expires_at == env.clock.now() + timedelta(seconds=3600)


def test_cancel_a_queued_job_ends_it_and_publishes_the_result() -> None:
    env = fake_env(vms=[])
    job_id = _submit(env)
    response = env.client.post(f"/jobs/{job_id}:cancel")
    assert response.status_code == 200
    assert response.get_json()["state"] == "cancelled"
    assert response.get_json()["error"]["type"] == "cancelled"
    ((data, attributes),) = env.publisher.messages
    assert attributes == {"job_id": job_id, "status": "cancelled"}
    assert ResultMessage.model_validate_json(data).status is JobState.CANCELLED
    assert env.store.get_job(job_id).result_published_at is not None


@pytest.mark.parametrize("state", [JobState.STARTING, JobState.RUNNING])
def test_cancel_a_live_job_asks_the_worker(state: JobState) -> None:
    env = fake_env()
    job_id = _submit(env)
    if state is JobState.RUNNING:
        env.store.update_job(job_id, lambda j: transition(j, JobState.RUNNING, env.clock.now()))
    response = env.client.post(f"/jobs/{job_id}:cancel")
    assert response.status_code == 202
    assert response.get_json()["state"] == state.value
    assert response.get_json()["cancel_requested"] is True
    assert env.store.get_job(job_id).cancel_requested is True
    assert env.publisher.messages == []
    assert env.client.post(f"/jobs/{job_id}:cancel").status_code == 202  # asking twice is fine


@pytest.mark.parametrize("state", [s for s in JobState if s.terminal])
def test_cancel_a_finished_job_is_409(state: JobState) -> None:
    env = fake_env(vms=[])
    job_id = _submit(env)
    env.store.update_job(job_id, lambda j: j.model_copy(update={"state": state}))
    response = env.client.post(f"/jobs/{job_id}:cancel")
    assert response.status_code == 409
    assert response.get_json()["error"] == {
        "code": "job_finished",
        "message": f"job {job_id} is already {state.value}",
        "details": {"state": state.value},
    }


def test_api_key_mode() -> None:
    key_hash = hashlib.sha256(b"s3cret").hexdigest()
    env = fake_env(auth_mode="api_key", api_key_hashes=[key_hash])
    missing = env.submit(body())
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthenticated"
    wrong = env.submit(body(), **{"X-API-Key": "guess"})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "forbidden"
    assert env.nothing_written()
    assert env.client.get("/jobs/x", headers={"X-API-Key": "guess"}).status_code == 403
    assert env.client.post("/jobs/x:cancel").status_code == 401
    ok = env.submit(body(), **{"X-API-Key": "s3cret"})
    assert ok.status_code == 202
    assert env.store.get_job(ok.get_json()["job_id"]).caller == f"api-key:{key_hash[:12]}"
    assert env.client.get("/healthz").status_code == 200  # open
    assert env.client.get("/openapi.json").get_json()["security"] == [{"apiKey": []}]


def test_iam_mode_takes_the_caller_from_the_verified_token() -> None:
    env = fake_env()
    claims = (
        base64.urlsafe_b64encode(json.dumps({"email": "ana@example.com"}).encode())
        .decode()
        .rstrip("=")
    )
    job_id = _submit(env, Authorization=f"Bearer e30.{claims}.sig")
    assert env.store.get_job(job_id).caller == "ana@example.com"
    anonymous = _submit(env, Authorization="Bearer not-a-jwt")
    assert env.store.get_job(anonymous).caller is None


def _token(claims: dict[str, str]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"Bearer e30.{payload}.SIGNATURE_REMOVED_BY_GOOGLE"


def test_iam_mode_never_trusts_a_header_the_client_sets() -> None:
    """Only IAP sets X-Goog-Authenticated-User-Email; here any client can, so it is ignored."""
    env = fake_env()
    forged = {"X-Goog-Authenticated-User-Email": "accounts.google.com:bo@example.com"}
    job_id = _submit(env, Authorization=_token({"email": "ana@example.com"}), **forged)
    assert env.store.get_job(job_id).caller == "ana@example.com"
    assert env.store.get_job(_submit(env, **forged)).caller is None


def test_iam_mode_reads_the_token_cloud_run_checked_first() -> None:
    """With X-Serverless-Authorization present, Cloud Run checks that one and passes
    Authorization through unchecked: the caller comes from the checked one only."""
    env = fake_env()
    job_id = _submit(
        env,
        **{
            "X-Serverless-Authorization": _token({"email": "ana@example.com"}),
            "Authorization": _token({"email": "bo@example.com"}),
        },
    )
    assert env.store.get_job(job_id).caller == "ana@example.com"
    subject_only = _submit(env, Authorization=_token({"sub": "1234567890"}))
    assert env.store.get_job(subject_only).caller == "1234567890"


def test_named_api_keys_name_their_caller() -> None:
    hashes = [f"ana={hashlib.sha256(b'k-ana').hexdigest()}", hashlib.sha256(b"k-x").hexdigest()]
    env = fake_env(auth_mode="api_key", api_key_hashes=hashes)
    named = _submit(env, **{"X-API-Key": "k-ana"})
    assert env.store.get_job(named).caller == "key:ana"
    unnamed = _submit(env, **{"X-API-Key": "k-x"})
    assert env.store.get_job(unnamed).caller == f"api-key:{hashlib.sha256(b'k-x').hexdigest()[:12]}"


def test_wrong_method_is_405_with_allow() -> None:
    env = fake_env()
    response = env.client.delete("/jobs")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert env.client.delete("/jobs/abc").status_code == 405
    assert env.client.get("/jobs/abc:cancel").status_code == 405


def test_an_unexpected_error_is_a_generic_500_with_the_traceback_only_in_the_log(caplog) -> None:  # type: ignore[no-untyped-def]
    env = fake_env()

    def boom(job_id: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals")

    env.store.get_job = boom  # type: ignore[method-assign]
    response = env.client.get("/jobs/abc")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal", "message": "internal error"}}
    assert b"secret" not in response.data
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    entry = json.loads(JsonFormatter().format(record))
    assert entry["severity"] == "ERROR" and entry["path"] == "/jobs/abc"
    assert "secret internals" in entry["message"] and "Traceback" in entry["message"]
    assert entry["logging.googleapis.com/sourceLocation"]["function"] == "error_response"


def test_a_dispatch_failure_still_answers_the_queued_job() -> None:
    env = fake_env()

    def down():  # type: ignore[no-untyped-def]
        raise RuntimeError("compute unreachable")

    env.fleet.list = down  # type: ignore[method-assign]
    response = env.submit(body())
    assert response.status_code == 202
    assert response.get_json()["state"] == "queued"
    assert env.store.get_job(response.get_json()["job_id"]).state is JobState.QUEUED


def test_openapi_describes_every_route_and_healthz_answers() -> None:
    env = fake_env()
    assert env.client.get("/healthz").get_json() == {"status": "ok"}
    document = env.client.get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/jobs",
        "/jobs:validate",
        "/jobs/{job_id}",
        "/jobs/{job_id}:cancel",
        "/jobs/{job_id}/preview",
        "/uploads",
        "/gpu-classes",
        "/usage",
        "/environments",
        "/environments/{environment_id}",
        "/healthz",
        "/openapi.json",
    }
    schemas = document["components"]["schemas"]
    assert {"JobRequest", "JobView", "ErrorBody", "ValidateResponse", "UploadAnswer"} <= set(
        schemas
    )
    submit = document["paths"]["/jobs"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobRequest"
    }
    assert {"202", "200", "400", "409", "413", "422"} <= set(submit["responses"])
