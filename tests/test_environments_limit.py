"""A caller's `max_environments` (caller_limits) through the app on the emulators: counted from
the caller's access records, asking again for one it has always answers, an override lifts a
caller, and a refusal is 403 `environment_limit_reached` that writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from comfyburst.domain.caller_limits import CallerLimits
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)
from tests.test_environments_api import C1, C2, TRUSTED, _as, _cloud, _post

pytestmark = pytest.mark.emulator

OTHER = f"https://github.com/Comfy-Org/other@{C2}"
THIRD = f"https://github.com/Comfy-Org/third@{C1}"
LIMITS = {"default": {"max_environments": 1}, "callers": {"key:bo": {"max_environments": 2}}}


@pytest.fixture
def cloud(settings: Any, standin: Any, blob_store: Any, signer: Any, publisher: Any) -> Cloud:  # noqa: F811
    return _cloud(
        settings,
        standin,
        blob_store,
        signer,
        publisher,
        custom_node_sources=["github.com"],
        trusted_custom_node_sources=["github.com/Comfy-Org"],
        caller_limits=CallerLimits.model_validate(LIMITS),
    )


def _written(cloud: Cloud) -> dict[str, set[str]]:
    """Every environment, access record and job document's id."""
    client = cloud.store._client
    names = {
        "environments": cloud.settings.environments_collection,
        "access": cloud.settings.environment_access_collection,
    }
    found = {k: {snap.id for snap in client.collection(v).get()} for k, v in names.items()}
    return {**found, "jobs": {job.job_id for job in cloud.jobs()}}


def _refused(answer: Any, limit: int) -> None:
    assert answer.status_code == 403, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == "environment_limit_reached"
    assert error["details"] == {"max_environments": limit, "environments": limit}


def test_a_caller_at_its_limit_may_reuse_its_own_but_not_ask_for_another(cloud: Cloud) -> None:
    mine = _post(cloud, "ana", [TRUSTED])
    assert mine.status_code == 201, mine.get_json()
    before = _written(cloud)
    _refused(_post(cloud, "ana", [OTHER]), 1)
    assert _written(cloud) == before  # no environment, no access record, no build job
    again = _post(cloud, "ana", [TRUSTED])
    assert (again.status_code, again.get_json()) == (200, mine.get_json())
    listed = cloud.client.get("/environments", headers=_as("ana")).get_json()
    assert [env["id"] for env in listed["environments"]] == [mine.get_json()["id"]]


def test_an_override_lifts_a_caller_and_anothers_environment_counts_once_asked(
    cloud: Cloud,
) -> None:
    assert _post(cloud, "ana", [TRUSTED]).status_code == 201
    assert _post(cloud, "bo", [OTHER]).status_code == 201
    # ana's (shared) environment is new to bo: asking for it is bo's second.
    assert _post(cloud, "bo", [TRUSTED]).status_code == 200
    before = _written(cloud)
    _refused(_post(cloud, "bo", [THIRD]), 2)
    assert _written(cloud) == before
    assert _post(cloud, "bo", [OTHER]).status_code == 200
