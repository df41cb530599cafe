"""The job API on the local cloud's emulators: real Firestore, GCS and Pub/Sub adapters, and a
Compute stand-in of our own (3 VMs in 2 zones, guests that run nothing) so the session's reaper
and workers never touch these jobs (they also live in their own collections)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from comfyburst import wiring
from comfyburst.api import build_api_deps
from comfyburst.services.dispatch import METADATA_CONFIG_KEY
from comfyburst.states import JobState
from tests._api_support import MAIN_SOURCE, PNG_1X1, body, ckpt_body
from tests._poll import poll_until

pytestmark = pytest.mark.emulator

POOL_LABEL = ("comfyburst-pool", "apitest")
VMS = [("apitest-a1", "zone-a"), ("apitest-a2", "zone-a"), ("apitest-b1", "zone-b")]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory, function_settings: Any) -> Iterator[Any]:
    from localcloud.compute import ComputeStandin, ComputeStandinConfig, InstanceSpec

    config = ComputeStandinConfig(
        project=function_settings.project_id,
        instances=[
            InstanceSpec(name=name, zone=zone, labels=dict([POOL_LABEL])) for name, zone in VMS
        ],
        staging_s=0.05,
        stopping_s=0.05,
        guest=None,
        log_dir=tmp_path_factory.mktemp("apitest-compute"),
    )
    with ComputeStandin(config) as running:
        yield running


@pytest.fixture(scope="module")
def settings(function_settings: Any, standin: Any) -> Any:
    return function_settings.model_copy(
        update={
            "jobs_collection": "apitest_jobs",
            "vms_collection": "apitest_vms",
            "idempotency_collection": "apitest_idempotency",
            "compute_endpoint": standin.base_url,
            "pool_zones": ["zone-a", "zone-b"],
            "pool_label": "=".join(POOL_LABEL),
        }
    )


class Cloud:
    """The app of functions/main.py on emulator-backed adapters, and ways to look inside."""

    def __init__(
        self,
        settings: Any,
        standin: Any,
        blobs: Any,
        signer: Any,
        publisher: Any,
        clock: Any = None,
    ):
        import functions_framework

        self.settings, self.standin, self.blobs = settings, standin, blobs
        self.store = wiring.job_store(settings)
        self.deps = build_api_deps(
            settings,
            store=self.store,
            blobs=blobs,
            signer=signer,
            publisher=publisher,
            fleet=wiring.fleet(settings),
            clock=clock or wiring.clock(),
            views=wiring.job_views(settings),
        )
        app = functions_framework.create_app(target="api", source=str(MAIN_SOURCE))
        sys.modules["main"].api_deps.set(self.deps)
        self.client = app.test_client()

    def submit(self, request: Any, **headers: str) -> Any:
        data = request if isinstance(request, bytes) else json.dumps(request)
        return self.client.post(
            "/jobs", data=data, headers=headers, content_type="application/json"
        )

    def jobs(self) -> list[Any]:
        return self.store.list_jobs(list(JobState))

    def objects(self) -> list[str]:
        found = []
        for bucket in (self.settings.jobs_bucket, self.settings.outputs_bucket):
            found += self.blobs.list(bucket, "jobs/")
        return found

    def nothing_written(self) -> bool:
        idempotency = self.store._idempotency.limit(1).get()
        return not self.jobs() and not self.objects() and not idempotency

    def vm(self, name: str) -> dict[str, Any]:
        return self.standin.instance(name)

    def wait_running(self, name: str, timeout_s: float = 10.0) -> dict[str, Any]:
        def running() -> dict[str, Any] | None:
            state = self.vm(name)
            return state if state["status"] == "RUNNING" else None

        return poll_until(running, f"{name} to run", timeout_s=timeout_s, interval_s=0.02)


@pytest.fixture
def cloud(settings: Any, standin: Any, blob_store: Any, signer: Any, publisher: Any) -> Cloud:
    standin.reset()
    return Cloud(settings, standin, blob_store, signer, publisher)


def test_submit_starts_a_vm_leased_to_the_job(cloud: Cloud) -> None:
    response = cloud.submit(body(inputs=[{"name": "in.png", "data_b64": PNG_1X1}]))
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["state"] == "starting"
    job_id = job["job_id"]
    request = cloud.blobs.read(cloud.settings.jobs_bucket, f"jobs/{job_id}/request.json")
    assert json.loads(request)["workflow"] == body()["workflow"]
    assert (
        cloud.blobs.read(cloud.settings.jobs_bucket, f"jobs/{job_id}/inputs/in.png")[:4]
        == b"\x89PNG"
    )
    stored = cloud.store.get_job(job_id)
    assert stored.state is JobState.STARTING and stored.vm is not None
    vm = cloud.wait_running(stored.vm.name)
    assert vm["status"] == "RUNNING"
    assert "comfyburst-job" not in vm["metadata"]  # the worker reads the lease instead
    config = json.loads(vm["metadata"][METADATA_CONFIG_KEY])
    assert config["jobs_bucket"] == cloud.settings.jobs_bucket
    assert config["jobs_collection"] == "apitest_jobs"
    record, _ = cloud.store.get_vm(stored.vm.name)
    assert record.lease.job_id == job_id
    fetched = cloud.client.get(f"/jobs/{job_id}")
    assert fetched.status_code == 200 and fetched.get_json()["state"] == "starting"


def test_three_vms_five_jobs(cloud: Cloud) -> None:
    answers = [cloud.submit(body()).get_json() for _ in range(5)]
    assert [a["state"] for a in answers] == ["starting"] * 3 + ["queued"] * 2
    assert {a["queued_reason"] for a in answers[3:]} == {"no free VM"}
    names = {cloud.store.get_job(a["job_id"]).vm.name for a in answers[:3]}
    assert names == {name for name, _ in VMS}


def test_twenty_concurrent_submits_never_lease_a_vm_twice(cloud: Cloud) -> None:
    results: list[Any] = [None] * 20
    barrier = threading.Barrier(20, timeout=30)

    def submit(index: int) -> None:
        barrier.wait()
        response = cloud.submit(body())
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(r is not None and r[0] == 202 for r in results), results
    jobs = cloud.jobs()
    starting = [j for j in jobs if j.state is JobState.STARTING]
    assert len(jobs) == 20 and len(starting) == 3
    assert sorted(j.vm.name for j in starting) == sorted(name for name, _ in VMS)
    for job in starting:
        record, _ = cloud.store.get_vm(job.vm.name)
        assert record.lease.job_id == job.job_id
        assert cloud.wait_running(job.vm.name)["status"] == "RUNNING"


def test_stockout_in_the_first_zone_starts_in_the_next(cloud: Cloud) -> None:
    cloud.standin.add_fault({"kind": "stockout", "zone": "zone-a", "count": "always"})
    first = cloud.submit(body()).get_json()
    assert first["state"] == "starting"
    assert cloud.store.get_job(first["job_id"]).vm.zone == "zone-b"
    second = cloud.submit(body()).get_json()
    assert second["state"] == "queued"
    assert second["queued_reason"] == "all zones out of capacity"
    cooled = [cloud.store.get_vm(name)[0] for name, zone in VMS if zone == "zone-a"]
    assert any(r is not None and r.cooldown_until is not None and r.lease is None for r in cooled)


def test_idempotent_resubmit(cloud: Cloud) -> None:
    first = cloud.submit(body(), **{"Idempotency-Key": "emu-1"})
    again = cloud.submit(body(), **{"Idempotency-Key": "emu-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert len(cloud.jobs()) == 1
    conflict = cloud.submit(body(options={"timeout_s": 99}), **{"Idempotency-Key": "emu-1"})
    assert conflict.status_code == 409
    assert conflict.get_json()["error"]["code"] == "idempotency_conflict"


def test_cancel_in_each_state(cloud: Cloud) -> None:
    jobs = [cloud.submit(body()).get_json() for _ in range(4)]
    running_id, starting_id, queued_id = jobs[0]["job_id"], jobs[1]["job_id"], jobs[3]["job_id"]
    from comfyburst.domain.jobs import transition

    cloud.store.update_job(running_id, lambda j: transition(j, JobState.RUNNING, j.created_at))
    assert cloud.client.post(f"/jobs/{queued_id}:cancel").get_json()["state"] == "cancelled"
    for job_id in (starting_id, running_id):
        response = cloud.client.post(f"/jobs/{job_id}:cancel")
        assert response.status_code == 202 and response.get_json()["cancel_requested"] is True
        assert cloud.store.get_job(job_id).cancel_requested is True
    finished = cloud.client.post(f"/jobs/{queued_id}:cancel")
    assert finished.status_code == 409
    stored = cloud.store.get_job(queued_id)
    assert stored.state is JobState.CANCELLED and stored.result_published_at is not None


BAD = [
    (b"{oops", 400),
    ({"workflow": {"1": {"class_type": "SaveImage"}}}, 400),
    (ckpt_body("https://169.254.169.254/latest"), 400),
    (ckpt_body("gs://not-ours/x.safetensors"), 400),
    (body(inputs=[{"name": "../x.png", "data_b64": PNG_1X1}]), 400),
    (body(inputs=[{"name": "x.png", "data_b64": "!!"}]), 400),
    ({"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}, 422),
]


@pytest.mark.parametrize(("request_body", "status"), BAD)
def test_bad_input_writes_nothing_to_firestore_or_gcs(
    cloud: Cloud, request_body: Any, status: int
) -> None:
    response = cloud.submit(request_body, **{"Idempotency-Key": "bad"})
    assert response.status_code == status, response.get_json()
    assert cloud.nothing_written()
    assert all(vm["status"] == "TERMINATED" for vm in cloud.standin.instances())


def test_the_local_api_process_serves_the_same_contract(localcloud_env: dict[str, str]) -> None:
    """Through functions/main.py's own wiring (settings from the environment), over HTTP."""
    import requests

    url = localcloud_env["COMFYBURST_API_URL"]
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    response = requests.post(f"{url}/jobs", json=body(), timeout=30)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] in ("starting", "queued")
    assert requests.get(f"{url}/jobs/{job['job_id']}", timeout=10).json()["job_id"] == job["job_id"]
    assert requests.get(f"{url}/jobs/unknown", timeout=10).status_code == 404
