"""Per-caller limits through the app of functions/main.py on the emulators, with two API keys
(ana, bo): a full queue answers 429 `queue_full` with Retry-After, a GPU class the caller may
not use 403 `gpu_class_forbidden`; nothing is written for a refusal; the other caller is
unaffected."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from comfyburst.domain.caller_limits import QUEUE_FULL_RETRY_AFTER_S
from comfyburst.states import JobState
from tests._api_support import body
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.emulator

KEYS = {"ana": "key-ana-limits", "bo": "key-bo-limits"}
TEMPLATE = "projects/P/regions/zone/instanceTemplates/none"
# Neither class may create a VM (max_vms 0), and the pool label matches no VM: jobs queue.
CLASSES = [
    {"name": "t4", "zones": ["zone-a"], "templates": {"zone": TEMPLATE}, "max_vms": 0},
    {"name": "h100", "zones": ["zone-b"], "templates": {"zone": TEMPLATE}, "max_vms": 0},
]


def _as(name: str, **headers: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name], **headers}


def _cloud(settings: Any, standin: Any, deps: tuple[Any, Any, Any], limits: dict) -> Cloud:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    # Validated, as FunctionSettings reads them from the environment (classes, limits).
    keyed = type(settings).model_validate(
        {
            **settings.model_dump(),
            "auth_mode": "api_key",
            "api_key_hashes": [
                f"{name}={hashlib.sha256(key.encode()).hexdigest()}" for name, key in KEYS.items()
            ],
            "jobs_collection": f"limits_jobs_{suffix}",
            "vms_collection": f"limits_vms_{suffix}",
            "idempotency_collection": f"limits_idem_{suffix}",
            "pool_label": "comfyburst-pool=no-such-pool",
            "gpu_classes": CLASSES,
            "caller_limits": limits,
        }
    )
    return Cloud(keyed, standin, *deps)


@pytest.fixture
def deps(blob_store: Any, signer: Any, publisher: Any) -> tuple[Any, Any, Any]:
    return blob_store, signer, publisher


def _state(cloud: Cloud) -> tuple[list[str], list[str], list[Any], list[Any]]:
    """Everything a submit may write: jobs, objects under jobs/, idempotency and VM documents."""
    jobs = sorted(j.job_id for j in cloud.jobs())
    objects = sorted(cloud.blobs.list(cloud.settings.jobs_bucket, "jobs/"))
    keys = list(cloud.store._idempotency.limit(5).get())
    leases = cloud.store.list_vms()
    return jobs, objects, keys, leases


def test_a_full_queue_answers_429_with_retry_after_and_writes_nothing(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    deps: tuple[Any, Any, Any],
) -> None:
    limits = {"default": {"max_queued": 5}, "callers": {"key:ana": {"max_queued": 1}}}
    cloud = _cloud(settings, standin, deps, limits)
    first = cloud.submit(body(), **_as("ana", **{"Idempotency-Key": "ana-1"}))
    assert first.status_code == 202, first.get_json()
    assert first.get_json()["state"] == JobState.QUEUED.value
    before = _state(cloud)

    refused = cloud.submit(body(), **_as("ana", **{"Idempotency-Key": "ana-2"}))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_S)
    error = refused.get_json()["error"]
    assert error["code"] == "queue_full" and error["details"] == {"max_queued": 1}
    assert _state(cloud) == before  # no job, no request.json, no key, no lease

    # The same key again answers the job it made, full queue or not.
    again = cloud.submit(body(), **_as("ana", **{"Idempotency-Key": "ana-1"}))
    assert again.status_code == 200 and again.get_json()["job_id"] == first.get_json()["job_id"]
    assert _state(cloud) == before

    # bo's own limit (the default, 5) is untouched by ana's queue.
    for _ in range(2):
        other = cloud.submit(body(), **_as("bo"))
        assert other.status_code == 202, other.get_json()
    callers = sorted(j.caller for j in cloud.jobs())
    assert callers == ["key:ana", "key:bo", "key:bo"]


def test_a_class_the_caller_may_not_use_answers_403_naming_it_and_writes_nothing(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    deps: tuple[Any, Any, Any],
) -> None:
    limits = {"default": {"gpu_classes": ["t4"]}, "callers": {"key:bo": {"gpu_classes": ["h100"]}}}
    cloud = _cloud(settings, standin, deps, limits)
    before = _state(cloud)
    refused = cloud.submit(body(options={"gpu_class": "h100"}), **_as("ana"))
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "gpu_class_forbidden" and error["field"] == "options.gpu_class"
    assert error["details"] == {"gpu_class": "h100", "allowed": ["t4"]}
    assert "h100" in error["message"]
    assert _state(cloud) == before

    allowed = cloud.submit(body(options={"gpu_class": "t4"}), **_as("ana"))
    assert allowed.status_code == 202, allowed.get_json()
    other = cloud.submit(body(options={"gpu_class": "h100"}), **_as("bo"))
    assert other.status_code == 202, other.get_json()
    assert {(j.caller, j.gpu_class) for j in cloud.jobs()} == {
        ("key:ana", "t4"),
        ("key:bo", "h100"),
    }


def test_racing_submits_of_one_caller_never_queue_more_than_the_limit(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    deps: tuple[Any, Any, Any],
) -> None:
    # One API instance (this process): its submits of one caller are serialised by a slot,
    # so however they interleave with the count query, at most max_queued are admitted.
    cloud = _cloud(settings, standin, deps, {"default": {"max_queued": 2}})
    start = threading.Barrier(6, timeout=60)

    def submit(_: int) -> int:
        client = cloud.client.application.test_client()
        start.wait()
        response = client.post(
            "/jobs", data=json.dumps(body()), headers=_as("ana"), content_type="application/json"
        )
        assert response.status_code == 202 or response.get_json()["error"]["code"] == "queue_full"
        return int(response.status_code)

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(submit, range(6)))
    admitted = statuses.count(202)
    assert 1 <= admitted <= 2 and statuses.count(429) == 6 - admitted, statuses
    assert len(cloud.jobs()) == admitted
    # A refusal near the limit may come early (a committed job whose slot is still held);
    # sequential submits then fill the queue to exactly the limit, never past it.
    while cloud.submit(body(), **_as("ana")).status_code == 202:
        assert len(cloud.jobs()) <= 2
    assert len(cloud.jobs()) == 2
