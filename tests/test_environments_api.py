"""Environments through the app of functions/main.py on the emulators, with two API keys (ana,
bo): idempotent creation, private environments per creator, the caller's list, every refusal
a 4xx that writes nothing, and jobs naming an environment."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfyburst import wiring
from comfyburst.domain.custom_node_sources import SourcePolicy
from comfyburst.domain.environments import plan_environment
from tests._api_support import body
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.emulator

KEYS = {"ana": "key-ana-1", "bo": "key-bo-2"}
C1, C2 = "1" * 40, "2" * 40
TRUSTED = f"https://github.com/Comfy-Org/nodes@{C1}"
UNTRUSTED = f"https://github.com/someone/pack@{C1}"
UNKNOWN_ID = "env-" + "0" * 64


def _as(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def _cloud(base: Any, compute: Any, blobs: Any, signer: Any, publisher: Any, **extra: Any) -> Cloud:
    keyed = base.model_copy(
        update={
            "auth_mode": "api_key",
            "api_key_hashes": [
                f"{name}={hashlib.sha256(key.encode()).hexdigest()}" for name, key in KEYS.items()
            ],
            "environments_collection": "apitest_environments",
            "environment_access_collection": "apitest_environment_access",
            **extra,
        }
    )
    compute.reset()
    cloud = Cloud(keyed, compute, blobs, signer, publisher)
    cloud.deps.environments = wiring.environment_store(keyed)
    return cloud


@pytest.fixture
def cloud(settings: Any, standin: Any, blob_store: Any, signer: Any, publisher: Any) -> Cloud:  # noqa: F811
    return _cloud(
        settings,
        standin,
        blob_store,
        signer,
        publisher,
        custom_node_sources=["github.com", "registry:*"],
        trusted_custom_node_sources=["github.com/Comfy-Org", "registry:kjnodes"],
        custom_node_registry_url="https://registry.example.com",
    )


def _post(cloud: Cloud, who: str, packs: Any) -> Any:
    return cloud.client.post("/environments", json={"packs": packs}, headers=_as(who))


def _documents(cloud: Cloud) -> list[Any]:
    client = cloud.store._client
    return [
        *client.collection(cloud.settings.environments_collection).limit(5).get(),
        *client.collection(cloud.settings.environment_access_collection).limit(5).get(),
    ]


def _set_state(cloud: Cloud, env_id: str, state: str, error: str | None = None) -> None:
    ref = cloud.store._client.collection(cloud.settings.environments_collection).document(env_id)
    ref.update({"state": state, "error": error})


def test_the_same_set_is_the_same_environment(cloud: Cloud) -> None:
    first = _post(cloud, "ana", [TRUSTED, "kjnodes@1.0.5"])
    assert first.status_code == 201, first.get_json()
    view = first.get_json()
    assert view["state"] == "building" and view["node_types"] == [] and view["error"] is None
    assert view["private"] is False and view["packs"] == sorted([TRUSTED, "kjnodes@1.0.5"])
    assert first.headers["Location"] == f"/environments/{view['id']}"
    again = _post(cloud, "ana", ["kjnodes@1.0.5", TRUSTED.replace("nodes@", "nodes.git@"), TRUSTED])
    assert (again.status_code, again.get_json()) == (200, view)
    # A shared environment: bo asking for it gets the same one, and both list it.
    assert _post(cloud, "bo", [TRUSTED, "kjnodes@1.0.5"]).get_json() == view
    got = cloud.client.get(f"/environments/{view['id']}", headers=_as("bo"))
    assert (got.status_code, got.get_json()) == (200, view)
    for who in ("ana", "bo"):
        listed = cloud.client.get("/environments", headers=_as(who)).get_json()
        assert listed == {"environments": [view]}


def test_a_private_environment_is_its_creators_alone(cloud: Cloud) -> None:
    mine = _post(cloud, "ana", [UNTRUSTED]).get_json()
    assert mine["private"] is True
    theirs = _post(cloud, "bo", [UNTRUSTED]).get_json()
    assert theirs["private"] is True and theirs["id"] != mine["id"]
    assert _post(cloud, "ana", [UNTRUSTED]).get_json() == mine
    # bo: ana's private environment answers exactly like a missing one.
    foreign = cloud.client.get(f"/environments/{mine['id']}", headers=_as("bo"))
    missing = cloud.client.get(f"/environments/{UNKNOWN_ID}", headers=_as("bo"))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.get_data() == missing.get_data()
    assert cloud.client.get("/environments/not-an-id", headers=_as("bo")).get_data() == (
        missing.get_data()
    )
    assert cloud.client.get("/environments", headers=_as("bo")).get_json() == {
        "environments": [theirs]
    }
    assert cloud.client.get(f"/environments/{mine['id']}", headers=_as("ana")).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"packs": [f"https://gitlab.com/o/r@{C1}"]}, 403, "pack_not_allowed"),
        (
            {"packs": [f"https://github.com/o/r@{C1}", f"https://github.com/o/r@{C2}"]},
            400,
            "environment_invalid",
        ),
        ({"packs": ["https://github.com/o/r@main"]}, 400, "environment_invalid"),
        ({"packs": [f"http://github.com/o/r@{C1}"]}, 400, "environment_invalid"),
        ({"packs": [f"https://169.254.169.254/o/r@{C1}"]}, 400, "environment_invalid"),
        ({"packs": []}, 400, "environment_invalid"),
        ({"packs": [1]}, 400, "environment_invalid"),
        ({"packs": [TRUSTED], "extra": 1}, 400, "environment_invalid"),
        (b"{not json", 400, "invalid_json"),
        ({"packs": ["x" * 70_000]}, 413, "payload_too_large"),
    ],
)
def test_bad_input_is_a_4xx_that_writes_nothing(
    cloud: Cloud, payload: Any, status: int, code: str
) -> None:
    kwargs = {"data": payload} if isinstance(payload, bytes) else {"json": payload}
    answer = cloud.client.post("/environments", headers=_as("ana"), **kwargs)
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["error"]["code"] == code
    assert _documents(cloud) == [] and cloud.nothing_written()  # no job, object or key either


@pytest.fixture
def off_cloud(settings: Any, standin: Any, blob_store: Any, signer: Any, publisher: Any) -> Cloud:  # noqa: F811
    return _cloud(settings, standin, blob_store, signer, publisher)


def test_environments_are_off_until_the_deployer_lists_sources(off_cloud: Cloud) -> None:
    cloud = off_cloud
    answers = [
        _post(cloud, "ana", [TRUSTED]),
        cloud.client.get("/environments", headers=_as("ana")),
        cloud.client.get(f"/environments/{UNKNOWN_ID}", headers=_as("ana")),
        cloud.submit(body(options={"environment": UNKNOWN_ID}), **_as("ana")),
    ]
    for answer in answers:
        assert answer.status_code == 403, answer.get_json()
        assert answer.get_json()["error"]["code"] == "environments_disabled"
    assert _documents(cloud) == [] and cloud.nothing_written()
    assert cloud.client.get("/environments").status_code == 401  # no key: 401 first


def test_a_job_runs_only_in_a_ready_environment_of_its_caller(cloud: Cloud) -> None:
    private = _post(cloud, "ana", [UNTRUSTED]).get_json()["id"]
    shared = _post(cloud, "ana", [TRUSTED]).get_json()["id"]

    def submit(who: str, env_id: str) -> Any:
        return cloud.submit(body(options={"environment": env_id}), **_as(who))

    refusals = [
        (submit("ana", UNKNOWN_ID), 422, "environment_unusable"),
        (submit("bo", private), 422, "environment_unusable"),
        (submit("ana", private), 409, "environment_building"),
    ]
    _set_state(cloud, shared, "failed", "pip: no matching distribution")
    refusals.append((submit("bo", shared), 422, "environment_unusable"))
    for answer, status, code in refusals:
        assert answer.status_code == status, answer.get_json()
        error = answer.get_json()["error"]
        assert error["code"] == code and error["field"] == "options.environment"
    assert "pip: no matching distribution" in refusals[-1][0].get_json()["error"]["message"]
    # The refused jobs wrote nothing: the only jobs are the environments' build jobs.
    assert all(j.environment_build is not None for j in cloud.jobs()) and not cloud.objects()
    # One marked ready (as its build job's end does) is accepted and recorded.
    _set_state(cloud, private, "ready")
    assert submit("bo", private).status_code == 422  # still ana's alone
    accepted = submit("ana", private)
    assert accepted.status_code == 202, accepted.get_json()
    assert accepted.get_json()["options"]["environment"] == private
    job = cloud.store.get_job(accepted.get_json()["job_id"])
    assert job.options.environment == private
    plain = cloud.submit(body(), **_as("bo"))
    assert plain.status_code == 202 and plain.get_json()["options"]["environment"] is None


def test_the_store_keeps_a_callers_list_in_asking_order(cloud: Cloud) -> None:
    # Directly on the adapter: a deployment without a verified caller (None) has its own list.
    store = cloud.deps.environments
    assert store is not None
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for minute, packs in enumerate(([TRUSTED], ["a@1.0"], [TRUSTED])):
        planned = plan_environment(
            packs,
            sources=SourcePolicy.of(["github.com", "registry:*"]),
            trusted=SourcePolicy.of(["github.com", "registry:*"]),
            comfyui_commit=cloud.settings.comfyui_commit,
            caller=None,
        )
        made.append(store.create(planned.new_document(start + timedelta(minutes=minute)), None))
    assert [created for _, created in made] == [True, True, False]
    assert made[2][0] == made[0][0]  # the stored document, not the second ask's
    listed = [env.environment_id for env in store.list_for(None, 10)]
    assert listed == [made[0][0].environment_id, made[1][0].environment_id]
    assert store.list_for("key:ana", 10) == []


def test_a_job_records_whether_its_environment_is_private(cloud: Cloud) -> None:
    # The worker's isolation rule reads it from the job: no environment document on the VM.
    private = _post(cloud, "ana", [UNTRUSTED]).get_json()["id"]
    shared = _post(cloud, "ana", [TRUSTED]).get_json()["id"]
    for env_id in (private, shared):
        _set_state(cloud, env_id, "ready")
    submitted = {
        name: cloud.submit(body(options=options), **_as("ana"))
        for name, options in (
            ("private", {"environment": private}),
            ("shared", {"environment": shared}),
            ("none", {}),
        )
    }
    stored = {}
    for name, answer in submitted.items():
        assert answer.status_code == 202, answer.get_json()
        stored[name] = cloud.store.get_job(answer.get_json()["job_id"])
    assert stored["private"].environment_private is True
    assert stored["private"].options.environment == private
    assert stored["shared"].environment_private is False
    assert stored["shared"].options.environment == shared
    assert stored["none"].environment_private is False
