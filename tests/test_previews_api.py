"""GET /jobs/{id}/preview on the emulators, through the app of functions/main.py: the running
job's latest frame from the outputs bucket, 204 when there is none or the job is not running,
and another caller's job answers exactly like an unknown one."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest
from PIL import Image

from comfyburst.domain.jobs import transition
from comfyburst.domain.previews import MAX_PREVIEW_BYTES, preview_object
from comfyburst.states import JobState
from tests._api_support import body
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.emulator

KEYS = {"ana": "preview-key-ana", "bo": "preview-key-bo", "ops": "preview-key-ops"}


def _as(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def _image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


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


def _running_job(cloud: Cloud, who: str = "ana") -> str:
    response = cloud.submit(body(), **_as(who))
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    cloud.store.update_job(job_id, lambda j: transition(j, JobState.RUNNING, j.created_at))
    return job_id


def _frame(cloud: Cloud, job_id: str, data: bytes, content_type: str = "image/jpeg") -> None:
    cloud.blobs.write(cloud.settings.outputs_bucket, preview_object(job_id), data, content_type)


def _get(cloud: Cloud, job_id: str, who: str = "ana") -> Any:
    return cloud.client.get(f"/jobs/{job_id}/preview", headers=_as(who))


def test_a_running_job_hands_out_its_latest_frame(cloud: Cloud) -> None:
    submitted = cloud.submit(body(), **_as("ana")).get_json()
    job_id = submitted["job_id"]
    assert _get(cloud, job_id).status_code == 204  # not running yet
    cloud.store.update_job(job_id, lambda j: transition(j, JobState.RUNNING, j.created_at))
    none_yet = _get(cloud, job_id)
    assert none_yet.status_code == 204 and none_yet.get_data() == b""
    for fmt, content_type in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
        data = _image(fmt)
        _frame(cloud, job_id, data, content_type)
        answer = _get(cloud, job_id)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == content_type
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.get_data() == data
    admin = _get(cloud, job_id, "ops")
    assert admin.status_code == 200 and admin.get_data() == data


@pytest.mark.parametrize(
    ("why", "data"),
    [
        ("html claiming to be a jpeg", b"<html><script>alert(1)</script></html>"),
        ("an svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ("over the size bound", b"\xff\xd8\xff" + b"\0" * MAX_PREVIEW_BYTES),
    ],
)
def test_an_object_that_is_not_an_allowed_image_is_never_served(
    cloud: Cloud, why: str, data: bytes
) -> None:
    job_id = _running_job(cloud)
    _frame(cloud, job_id, data)
    assert _get(cloud, job_id).status_code == 204, why


def test_a_finished_job_has_no_preview_even_if_an_object_was_left(cloud: Cloud) -> None:
    job_id = _running_job(cloud)
    _frame(cloud, job_id, _image("JPEG"))
    assert _get(cloud, job_id).status_code == 200
    cloud.store.update_job(job_id, lambda j: transition(j, JobState.CANCELLED, j.created_at))
    assert _get(cloud, job_id).status_code == 204


def test_another_callers_preview_answers_like_an_unknown_job(cloud: Cloud) -> None:
    job_id = _running_job(cloud, "ana")
    _frame(cloud, job_id, _image("JPEG"))
    theirs = _get(cloud, job_id, "bo")
    unknown = _get(cloud, "0" * 32, "bo")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.get_json() == {
        **unknown.get_json(),
        "error": {
            **unknown.get_json()["error"],
            "message": unknown.get_json()["error"]["message"].replace("0" * 32, job_id),
        },
    }
    assert theirs.headers["Content-Type"] == "application/json"


def test_bad_requests_answer_machine_readable_errors(cloud: Cloud) -> None:
    job_id = _running_job(cloud)
    unauthenticated = cloud.client.get(f"/jobs/{job_id}/preview")
    assert unauthenticated.status_code == 401 and "error" in unauthenticated.get_json()
    wrong_method = cloud.client.post(f"/jobs/{job_id}/preview", headers=_as("ana"))
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET"
    malformed = cloud.client.get("/jobs/bad$id/preview", headers=_as("ana"))
    assert malformed.status_code == 404 and malformed.get_json()["error"]["code"]
