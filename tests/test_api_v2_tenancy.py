"""Comfy API v2 callers kept apart, through the app of functions/main.py on the emulators: one
caller's Idempotency-Key, cursor and output assets are nothing to another; Bearer ID tokens in
`iam` mode name the caller; a key is single-use for 24 h, across the windows it is kept in."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fakes import FixedClock
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)
from tests.test_api_v2 import _as, _error, _submit, _workflow, cloud  # noqa: F401  (fixture)
from tests.test_api_v2_asset_inputs import store_output

pytestmark = pytest.mark.emulator

DAY_S = 24 * 3600


def _keyed(who: str, key: str) -> dict[str, str]:
    return _as(who, **{"Idempotency-Key": key})


def test_one_key_of_two_callers_makes_two_jobs_and_leaks_neither(cloud: Cloud) -> None:  # noqa: F811
    ana = _submit(cloud, {"workflow": _workflow()}, **_keyed("ana", "shared")).get_json()
    other = _workflow()
    other["1"]["inputs"]["width"] = 32
    bo = _submit(cloud, {"workflow": other}, **_keyed("bo", "shared"))
    assert bo.status_code == 201, bo.get_json()
    bo_job = bo.get_json()
    assert bo_job["id"] != ana["id"]
    stored = {job.job_id: job for job in cloud.jobs()}
    assert (stored[ana["id"]].caller, stored[bo_job["id"]].caller) == ("key:ana", "key:bo")
    ran = cloud.client.get(f"{bo_job['urls']['self']}/workflow", headers=_as("bo")).get_json()
    assert ran["workflow"] == other
    # Each caller's key stays claimed for that caller alone, in Firestore: a fresh instance
    # (its own app and adapters) refuses it too.
    fresh = Cloud(cloud.settings, cloud.standin, cloud.blobs, cloud.deps.signer,
                  cloud.deps.publisher)  # fmt: skip
    _error(_submit(fresh, {"workflow": _workflow()}, **_keyed("ana", "shared")), 422,
           "idempotency_key_reuse")  # fmt: skip
    listed = fresh.client.get("/api/v2/jobs", headers=_as("bo")).get_json()["jobs"]
    assert [item["id"] for item in listed] == [bo_job["id"]]


def test_another_callers_cursor_is_refused(cloud: Cloud) -> None:  # noqa: F811
    for _ in range(2):
        assert _submit(cloud, {"workflow": _workflow()}, **_as("ana")).status_code == 201
    first = cloud.client.get("/api/v2/jobs?limit=1", headers=_as("ana")).get_json()
    theirs = cloud.client.get(
        "/api/v2/jobs", query_string={"cursor": first["next_cursor"]}, headers=_as("bo")
    )
    assert _error(theirs, 400, "invalid_cursor")["details"]["field"] == "cursor"


def test_another_callers_output_is_the_same_404_for_read_content_and_delete(
    cloud: Cloud,  # noqa: F811
) -> None:
    job = _submit(cloud, {"workflow": _workflow()}, **_as("ana")).get_json()
    data, bucket = b"\x89PNG\r\n\x1a\n-out", cloud.settings.outputs_bucket
    name = store_output(cloud, job["id"], data)
    asset = f"/api/v2/assets/out-0-{job['id']}"
    # The owner: the asset, a 302 to its bytes, and a refusal to delete it alone.
    assert cloud.client.get(asset, headers=_as("ana")).get_json()["job_id"] == job["id"]
    assert cloud.client.get(f"{asset}/content", headers=_as("ana")).status_code == 302
    _error(cloud.client.delete(asset, headers=_as("ana")), 409, "asset_in_use")
    # Another caller: the 404 of a missing asset for each (not 409: that would say it exists).
    for answer in (
        cloud.client.get(asset, headers=_as("bo")),
        cloud.client.get(f"{asset}/content", headers=_as("bo")),
        cloud.client.delete(asset, headers=_as("bo")),
        cloud.client.get("/api/v2/assets/out-0-no-such-job", headers=_as("bo")),
    ):
        assert "Location" not in answer.headers
        assert _error(answer, 404, "not_found")["message"] == "asset not found"
    assert cloud.blobs.read(bucket, name) == data


def _id_token(email: str) -> str:
    """A Google ID token's shape (Cloud Run checks the signature before the function runs)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'email': email, 'sub': '1'})}.c2ln"


@pytest.fixture
def iam_cloud(cloud: Cloud) -> Cloud:  # noqa: F811
    keyed = cloud.settings.model_copy(
        update={"auth_mode": "iam", "jobs_collection": f"v2iam_{uuid.uuid4().hex[:8]}"}
    )
    return Cloud(keyed, cloud.standin, cloud.blobs, cloud.deps.signer, cloud.deps.publisher)


def test_bearer_id_tokens_name_the_caller_in_iam_mode(iam_cloud: Cloud) -> None:
    ana = {"Authorization": f"Bearer {_id_token('ana@example.com')}"}
    bo = {"Authorization": f"Bearer {_id_token('bo@example.com')}"}
    created = _submit(iam_cloud, {"workflow": _workflow()}, **ana)
    assert created.status_code == 201, created.get_json()
    job = created.get_json()
    assert iam_cloud.store.get_job(job["id"]).caller == "ana@example.com"
    assert iam_cloud.client.get(job["urls"]["self"], headers=ana).status_code == 200
    _error(iam_cloud.client.get(job["urls"]["self"], headers=bo), 404, "not_found")
    assert iam_cloud.client.get("/api/v2/jobs", headers=bo).get_json() == {"jobs": []}


def test_a_key_is_single_use_for_24_hours_across_its_windows(cloud: Cloud) -> None:  # noqa: F811
    # One second before a window ends, so the reuse below falls in the next window.
    now = int(datetime.now(UTC).timestamp())
    clock = FixedClock(datetime.fromtimestamp((now // DAY_S + 1) * DAY_S - 1, UTC))
    cloud.deps.clock = clock
    first = _submit(cloud, {"workflow": _workflow()}, **_keyed("ana", "daily"))
    assert first.status_code == 201, first.get_json()
    for seconds in (2, DAY_S - 3):  # the next window; then 1 s before 24 h
        clock.advance(seconds)
        reused = _submit(cloud, {"workflow": _workflow()}, **_keyed("ana", "daily"))
        _error(reused, 422, "idempotency_key_reuse")
    # Any body, even one refused otherwise, is refused as a reuse while the key is claimed.
    _error(_submit(cloud, b"{", **_keyed("ana", "daily")), 422, "idempotency_key_reuse")
    clock.advance(1)  # 24 h: the key is free again; a new job, the first one kept
    again = _submit(cloud, {"workflow": _workflow()}, **_keyed("ana", "daily"))
    assert again.status_code == 201, again.get_json()
    assert again.get_json()["id"] != first.get_json()["id"]
    assert sorted(j.created_at for j in cloud.jobs()) == [
        clock.current - timedelta(seconds=DAY_S),
        clock.current,
    ]
    clock.advance(1)
    _error(_submit(cloud, {"workflow": _workflow()}, **_keyed("ana", "daily")), 422,
           "idempotency_key_reuse")  # fmt: skip


def test_an_overlong_key_is_refused_naming_the_header(cloud: Cloud) -> None:  # noqa: F811
    long_key = _keyed("ana", "k" * 201)
    error = _error(_submit(cloud, {"workflow": _workflow()}, **long_key), 400, "invalid_request")
    assert error["details"]["field"] == "Idempotency-Key"
    assert cloud.nothing_written()
