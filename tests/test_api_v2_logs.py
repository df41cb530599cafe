"""`GET /api/v2/jobs/{id}/logs` through the app of functions/main.py on the emulators: the log
object the worker stores beside the job's outputs (fake-gcs-server), as bounded text, to the
job's caller only; 204 while there is none."""

from __future__ import annotations

from typing import Any

import pytest

from comfyburst.domain.job_logs import MAX_LOG_BYTES, MAX_LOG_LINES, job_log_object
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)
from tests.test_api_v2 import _as, _error, _submit, _workflow, cloud  # noqa: F401  (fixture)

pytestmark = pytest.mark.emulator


def _job(cloud: Cloud) -> dict[str, Any]:  # noqa: F811
    created = _submit(cloud, {"workflow": _workflow()}, **_as("ana"))
    assert created.status_code == 201, created.get_json()
    job: dict[str, Any] = created.get_json()
    return job


def _store(cloud: Cloud, job_id: str, text: str) -> None:  # noqa: F811
    name = job_log_object(job_id)
    cloud.blobs.write(cloud.settings.outputs_bucket, name, text.encode(), "text/plain")


def test_the_stored_log_is_served_as_text_to_its_caller_only(cloud: Cloud) -> None:  # noqa: F811
    job = _job(cloud)
    url = f"{job['urls']['self']}/logs"
    assert cloud.client.get(url, headers=_as("ana")).status_code == 204
    _store(cloud, job["id"], "got prompt\nPrompt executed in 0.08 seconds\n")
    answer = cloud.client.get(url, headers=_as("ana"))
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.get_data(as_text=True) == "got prompt\nPrompt executed in 0.08 seconds\n"
    # Another caller's key: the same 404 as for a job that does not exist.
    _error(cloud.client.get(url, headers=_as("bo")), 404, "not_found")
    _error(cloud.client.get(url.replace(job["id"], "nojob"), headers=_as("ana")), 404, "not_found")


def test_an_oversized_object_is_answered_bounded(cloud: Cloud) -> None:  # noqa: F811
    job = _job(cloud)
    _store(cloud, job["id"], "".join(f"line {i} {'x' * 100}\n" for i in range(5000)) + "END\n")
    text = cloud.client.get(f"{job['urls']['self']}/logs", headers=_as("ana")).get_data(
        as_text=True
    )
    assert len(text.encode()) <= MAX_LOG_BYTES and len(text.splitlines()) <= MAX_LOG_LINES
    assert text.endswith("line 4999 " + "x" * 100 + "\nEND\n")
    assert text.startswith("line ")  # cut at a line


def test_an_empty_object_is_no_log(cloud: Cloud) -> None:  # noqa: F811
    job = _job(cloud)
    _store(cloud, job["id"], "\n\n")
    assert cloud.client.get(f"{job['urls']['self']}/logs", headers=_as("ana")).status_code == 204
