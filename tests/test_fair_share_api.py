"""`max_running` at submit, through the app of functions/main.py on the emulators and the
Compute stand-in: a caller at its limit gets 202 and its job waits `queued` (never refused)
while a VM sits free, and another caller's job starts on that VM."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from comfyburst.states import JobState
from tests._api_support import body
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.emulator

KEYS = {"ana": "key-ana-running", "bo": "key-bo-running"}


def _as(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def test_a_caller_at_max_running_queues_while_a_vm_is_free_and_another_caller_starts(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    blob_store: Any,
    signer: Any,
    publisher: Any,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    keyed = type(settings).model_validate(
        {
            **settings.model_dump(),
            "auth_mode": "api_key",
            "api_key_hashes": [
                f"{name}={hashlib.sha256(key.encode()).hexdigest()}" for name, key in KEYS.items()
            ],
            "jobs_collection": f"running_jobs_{suffix}",
            "vms_collection": f"running_vms_{suffix}",
            "idempotency_collection": f"running_idem_{suffix}",
            "caller_limits": {"callers": {"key:ana": {"max_running": 1}}},
        }
    )
    cloud = Cloud(keyed, standin, blob_store, signer, publisher)  # three stopped VMs

    first = cloud.submit(body(), **_as("ana"))
    assert first.status_code == 202 and first.get_json()["state"] == "starting", first.get_json()

    held = cloud.submit(body(), **_as("ana"))
    assert held.status_code == 202, held.get_json()
    job = cloud.store.get_job(held.get_json()["job_id"])
    assert job is not None and job.state is JobState.QUEUED and job.vm is None
    assert job.queued_reason is not None and "at once is 1" in job.queued_reason
    leased = [r.name for r in cloud.store.list_vms() if r.lease is not None]
    assert len(leased) == 1  # ana's second job tried no VM

    other = cloud.submit(body(), **_as("bo"))
    assert other.status_code == 202 and other.get_json()["state"] == "starting", other.get_json()
