"""End to end on a local cloud of its own (one VM whose guest is `localcloud.vm_guest`, the
model host allowed over http): API → VM boot → agent → ComfyUI stand-in → GCS → done.json →
completion trigger. Its own cloud, because the guest command and the model host are part of
the cloud's configuration."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from comfyburst.adapters.firestore_store import FirestoreJobStore
from comfyburst.adapters.gcs import GcsBlobStore
from comfyburst.schema import DoneManifest, Job, ModelKind, ModelSpec
from comfyburst.states import JobState
from tests._model_server import ModelServer
from tests._poll import poll_until
from tests._worker_support import invert_workflow, make_request

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

VM_NAME = "comfyburst-gpu-0"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Its own cloud: one VM with fast heartbeats, short drain grace and its model server as
    an allowed host (settings read when the functions and workers start)."""
    from google.cloud import firestore, storage

    from localcloud.cloud import LocalCloud
    from localcloud.config import LocalCloudConfig

    state = tmp_path_factory.mktemp("worker-cloud")
    model = state / "model.safetensors"
    model.write_bytes(os.urandom(3 * 1024 * 1024))
    with ModelServer({"/tiny.safetensors": model}) as server:
        config = LocalCloudConfig.ephemeral(
            state,
            pool_size=1,
            reaper_period_s=None,  # its tests drive each step; a pass would requeue the killed run
            compute_staging_s=0.2,
            guest_argv=[sys.executable, "-m", "localcloud.vm_guest"],
            guest_env={
                "LOCALCLOUD_VM_DISK_ROOT": str(state / "disks"),
                "COMFYBURST_WORKER_PROGRESS_MIN_INTERVAL_S": "0.2",
                "COMFYBURST_WORKER_JOB_POLL_INTERVAL_S": "0.2",
            },
            settings_env={
                "COMFYBURST_HTTP_MODEL_HOSTS": server.hostport,
                "COMFYBURST_DRAIN_GRACE_S": "4",
                "COMFYBURST_HEARTBEAT_INTERVAL_S": "1",
            },
        )
        local = LocalCloud(config).start()
        env = dict(local.env)
        # Clients bound to this cloud now, whatever the session's environment becomes later.
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            settings = SimpleNamespace(
                jobs_collection="jobs", vms_collection="vms", idempotency_collection="idempotency"
            )
            store = FirestoreJobStore(
                firestore.Client(project=env["COMFYBURST_PROJECT_ID"]), settings
            )
            blobs = GcsBlobStore(storage.Client(project=env["COMFYBURST_PROJECT_ID"]))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            yield SimpleNamespace(
                env=env,
                store=store,
                blobs=blobs,
                server=server,
                model_sha=hashlib.sha256(model.read_bytes()).hexdigest(),
                disk=state / "disks" / VM_NAME,
                log=state / "compute" / "logs" / f"{VM_NAME}.log",
            )
        finally:
            local.stop()


@pytest.fixture
def fresh(cloud: SimpleNamespace) -> Iterator[SimpleNamespace]:
    from localcloud.wipe import wipe_all

    wipe_all(cloud.env)
    (cloud.disk / "standin_faults.json").unlink(missing_ok=True)
    cloud.server.requests.clear()
    yield cloud
    (cloud.disk / "standin_faults.json").unlink(missing_ok=True)


def _faults(cloud: SimpleNamespace, faults: dict[str, Any]) -> None:
    cloud.disk.mkdir(parents=True, exist_ok=True)
    (cloud.disk / "standin_faults.json").write_text(json.dumps(faults))


def _submit(cloud: SimpleNamespace, workflow: dict[str, Any], with_model: bool = True) -> str:
    models = []
    if with_model:
        models.append(
            ModelSpec(
                kind=ModelKind.CHECKPOINTS,
                filename="tiny.safetensors",
                url=cloud.server.url("/tiny.safetensors"),
                sha256=cloud.model_sha,
            )
        )
    body = make_request(workflow, models).model_dump(mode="json")
    resp = requests.post(f"{cloud.env['COMFYBURST_API_URL']}/jobs", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["job_id"])


def _job(cloud: SimpleNamespace, job_id: str) -> Job:
    job = cloud.store.get_job(job_id)
    assert job is not None
    return job


def _manifest(cloud: SimpleNamespace, job_id: str) -> DoneManifest | None:
    raw = cloud.blobs.read(cloud.env["COMFYBURST_SIGNALS_BUCKET"], f"jobs/{job_id}/done.json")
    return DoneManifest.model_validate_json(raw) if raw else None


def _done(cloud: SimpleNamespace, job_id: str, timeout_s: float = 60) -> DoneManifest:
    return poll_until(
        lambda: _manifest(cloud, job_id),
        f"done.json of {job_id}",
        timeout_s=timeout_s,
        interval_s=0.1,
    )


def _boots(cloud: SimpleNamespace) -> int:
    return cloud.log.read_text().count("localcloud compute: boot") if cloud.log.exists() else 0


def test_two_jobs_one_boot_outputs_in_gcs(fresh: SimpleNamespace) -> None:
    boots = _boots(fresh)
    first = _submit(fresh, invert_workflow("e2e/one"))
    second = _submit(fresh, invert_workflow("e2e/two"))
    m1, m2 = _done(fresh, first), _done(fresh, second)
    assert m1.status.value == "succeeded" and m2.status.value == "succeeded"
    assert m1.next_job_id == second
    assert m1.timings.model_downloads == 1 and m2.timings.model_cache_hits == 1
    gets = [p for p, _, _ in fresh.server.requests if p == "/tiny.safetensors"]
    assert len(gets) == 1
    assert _boots(fresh) == boots + 1
    for job_id, manifest in ((first, m1), (second, m2)):
        out = manifest.outputs[0]
        data = fresh.blobs.read(
            fresh.env["COMFYBURST_OUTPUTS_BUCKET"], f"jobs/{job_id}/outputs/{out.name}"
        )
        assert data is not None and hashlib.sha256(data).hexdigest() == out.sha256
    two = _job(fresh, second)
    assert two.vm is not None and two.vm.name == VM_NAME


def test_cancel_mid_run_interrupts(fresh: SimpleNamespace) -> None:
    _faults(fresh, {"slow_node_class": "ImageInvert", "slow_node_s": 60, "sampler_steps": 600})
    job_id = _submit(fresh, invert_workflow(), with_model=False)
    poll_until(
        lambda: _job(fresh, job_id).progress.node == "2",
        "the slow node to run",
        timeout_s=60,
        interval_s=0.1,
    )
    began = time.monotonic()
    resp = requests.post(f"{fresh.env['COMFYBURST_API_URL']}/jobs/{job_id}:cancel", timeout=30)
    assert resp.status_code < 300, resp.text
    manifest = _done(fresh, job_id, 30)
    assert manifest.status.value == "cancelled"
    assert time.monotonic() - began < 20
    url = (fresh.disk / "standin_url").read_text()
    history = requests.get(f"{url}/history", timeout=5).json()
    events = [m[0] for entry in history.values() for m in entry["status"]["messages"]]
    assert "execution_interrupted" in events


def test_execution_error_fails_with_node_id(fresh: SimpleNamespace) -> None:
    _faults(fresh, {"execution_error": {"class_type": "ImageInvert", "message": "kaput"}})
    job_id = _submit(fresh, invert_workflow(), with_model=False)
    manifest = _done(fresh, job_id)
    assert manifest.status.value == "failed" and manifest.error is not None
    assert manifest.error.node_id == "2" and "kaput" in manifest.error.message


def test_agent_killed_mid_job_leaves_lease_and_no_done_flag(fresh: SimpleNamespace) -> None:
    _faults(fresh, {"slow_node_class": "ImageInvert", "slow_node_s": 60, "sampler_steps": 600})
    job_id = _submit(fresh, invert_workflow(), with_model=False)
    poll_until(
        lambda: _job(fresh, job_id).progress.node == "2",
        "the slow node to run",
        timeout_s=60,
        interval_s=0.1,
    )
    os.kill(int((fresh.disk / "agent.pid").read_text()), signal.SIGKILL)
    poll_until(
        lambda: "agent exited with -9" in fresh.log.read_text(),
        "the guest to end",
        timeout_s=20,
        interval_s=0.1,
    )
    assert _manifest(fresh, job_id) is None
    assert _job(fresh, job_id).state is JobState.RUNNING
    record, _ = fresh.store.get_vm(VM_NAME)
    assert record is not None and record.lease is not None and record.lease.job_id == job_id
