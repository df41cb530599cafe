"""A job belongs to its caller: on the emulators, through the app of functions/main.py, with
two API keys (ana, bo) and an admin key (ops). Another caller's job answers exactly like an
unknown one; no answer names another caller's job."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest

from comfyburst.schema import OutputFile
from comfyburst.states import JobState
from tests._api_support import body
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.emulator

KEYS = {"ana": "key-ana-1", "bo": "key-bo-2", "ops": "key-ops-3"}


def _as(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


@pytest.fixture
def cloud(settings: Any, standin: Any, blob_store: Any, signer: Any, publisher: Any) -> Cloud:  # noqa: F811
    keyed = settings.model_copy(
        update={
            "auth_mode": "api_key",
            "api_key_hashes": [
                f"{name}={hashlib.sha256(key.encode()).hexdigest()}" for name, key in KEYS.items()
            ],
            "admin_principals": ["key:ops"],
        }
    )
    standin.reset()
    return Cloud(keyed, standin, blob_store, signer, publisher)


def _submit(cloud: Cloud, who: str, **headers: str) -> str:
    response = cloud.submit(body(), **_as(who), **headers)
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    return job_id


def _unknown_answer(cloud: Cloud, who: str, path: str, job_id: str, method: str) -> Any:
    """What `who` gets for a job id that does not exist, with the id put back in."""
    unknown = "0" * 32
    call = cloud.client.post if method == "POST" else cloud.client.get
    response = call(path.replace(job_id, unknown), headers=_as(who))
    assert response.status_code == 404
    return response.status_code, response.get_data(as_text=True).replace(unknown, job_id)


def test_another_callers_job_answers_like_an_unknown_one(cloud: Cloud) -> None:
    job_id = _submit(cloud, "ana")
    for path, method in ((f"/jobs/{job_id}", "GET"), (f"/jobs/{job_id}:cancel", "POST")):
        call = cloud.client.post if method == "POST" else cloud.client.get
        answer = call(path, headers=_as("bo"))
        assert (answer.status_code, answer.get_data(as_text=True)) == _unknown_answer(
            cloud, "bo", path, job_id, method
        )
    stored = cloud.store.get_job(job_id)
    assert stored.caller == "key:ana" and stored.cancel_requested is False
    assert cloud.client.get(f"/jobs/{job_id}", headers=_as("ana")).status_code == 200


def test_no_url_is_signed_for_another_callers_outputs(cloud: Cloud) -> None:
    job_id = _submit(cloud, "ana")
    output = OutputFile(
        name="cb_00001_.png",
        size_bytes=3,
        sha256="0" * 64,
        content_type="image/png",
        gs_uri=f"gs://{cloud.settings.outputs_bucket}/jobs/{job_id}/outputs/cb_00001_.png",
    )
    cloud.store.patch_job(job_id, {"outputs": [output.model_dump(mode="python")]})
    refused = cloud.client.get(f"/jobs/{job_id}", headers=_as("bo"))
    assert refused.status_code == 404 and "signed" not in refused.get_data(as_text=True)
    assert cloud.store.get_job(job_id).outputs[0].signed_url is None  # nothing signed for bo
    own = cloud.client.get(f"/jobs/{job_id}", headers=_as("ana")).get_json()
    assert own["outputs"][0]["signed_url"]


def test_an_admin_sees_and_cancels_every_job(cloud: Cloud) -> None:
    job_id = _submit(cloud, "ana")
    seen = cloud.client.get(f"/jobs/{job_id}", headers=_as("ops"))
    assert seen.status_code == 200 and seen.get_json()["job_id"] == job_id
    cancelled = cloud.client.post(f"/jobs/{job_id}:cancel", headers=_as("ops"))
    assert cancelled.status_code == 202 and cloud.store.get_job(job_id).cancel_requested


def test_idempotency_keys_are_per_caller_and_conflicts_name_no_job(cloud: Cloud) -> None:
    key = {"Idempotency-Key": "shared-key"}
    ana = _submit(cloud, "ana", **key)
    other = cloud.submit(body(options={"timeout_s": 99}), **_as("bo"), **key)
    assert other.status_code == 202 and other.get_json()["job_id"] != ana
    conflict = cloud.submit(body(options={"timeout_s": 77}), **_as("ana"), **key)
    assert conflict.status_code == 409
    assert conflict.get_json()["error"]["code"] == "idempotency_conflict"
    text = conflict.get_data(as_text=True)
    assert ana not in text and other.get_json()["job_id"] not in text
    assert len(cloud.jobs()) == 2


def test_a_finished_job_of_another_caller_is_still_unknown(cloud: Cloud) -> None:
    job_id = _submit(cloud, "ana")
    from comfyburst.domain.jobs import transition

    cloud.store.update_job(
        job_id,
        lambda j: transition(j, JobState.CANCELLED, j.created_at + timedelta(seconds=1)),
    )
    # ana is told it is finished (409); bo cannot tell the job exists.
    assert cloud.client.post(f"/jobs/{job_id}:cancel", headers=_as("ana")).status_code == 409
    assert cloud.client.post(f"/jobs/{job_id}:cancel", headers=_as("bo")).status_code == 404
