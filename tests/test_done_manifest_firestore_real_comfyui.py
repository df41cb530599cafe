"""A REAL ComfyUI (COMFYUI_URL) refuses a checkpoint it does not have; the job ends `failed`
with the node's error and its result message is published.

The worker (its whole agent, in-memory job store and buckets) runs the job against the real
ComfyUI and writes done.json; that very file then lands in the local cloud's signals bucket,
where the trigger (`on_done_flag`, through the Eventarc stand-in) completes the job in the
Firestore emulator, as in the cloud.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from comfyburst.adapters.clock import SystemClock
from comfyburst.schema import DoneManifest, DoneStatus, VmRef
from comfyburst.states import JobState
from tests._completion_helpers import lease_record, make_job
from tests._poll import poll_until
from tests._worker_support import local_config, local_settings, make_agent, make_request, put_job
from tests.fakes import InMemoryBlobStore, InMemoryJobStore
from tests.test_done_manifest_firestore import _pulled, assert_ended_with, missing_checkpoint

COMFYUI_URL = os.environ.get("COMFYUI_URL", "").rstrip("/")

pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.emulator,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not COMFYUI_URL, reason="COMFYUI_URL is not set (needs a real ComfyUI)"),
]


def test_a_missing_checkpoint_fails_the_job_with_the_node_error(
    tmp_path, job_store, blob_store, function_settings, subscriber
):
    workflow, _ = missing_checkpoint()
    absent = f"absent-{uuid.uuid4().hex[:8]}.safetensors"
    workflow["1"]["inputs"]["ckpt_name"] = absent
    vm = VmRef(name=f"test-vm-{uuid.uuid4().hex[:6]}", zone="us-central1-a")
    store, blobs, config = InMemoryJobStore(), InMemoryBlobStore(), local_config()
    worker_job = put_job(store, blobs, config, make_request(workflow), vm)
    settings = local_settings(COMFYUI_URL, tmp_path / "models", comfyui_ready_timeout_s=60)
    make_agent(settings, config, store, blobs, vm).run(worker_job.job_id)
    raw = blobs.read("signals", f"jobs/{worker_job.job_id}/done.json")
    assert raw is not None, "no done.json"
    done = DoneManifest.model_validate_json(raw)
    assert done.status is DoneStatus.FAILED and done.error is not None, done
    assert (done.error.node_id, done.error.node_type) == ("1", "CheckpointLoaderSimple")
    assert done.error.message.startswith(f"Value not in list: ckpt_name: '{absent}' not in [")
    extra = done.error.details["node_errors"]["1"]["errors"][0]["extra_info"]
    assert isinstance(extra["input_config"][0], list)  # ComfyUI's array in an array

    project = function_settings.project_id
    sub = subscriber.subscription_path(project, f"test-real-{uuid.uuid4().hex[:12]}")
    topic = f"projects/{project}/topics/{function_settings.results_topic}"
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    try:
        now = SystemClock().now()
        job_store.create_job(make_job(done.job_id, now, JobState.RUNNING, vm=vm.name))
        job_store.put_vm(lease_record(vm.name, done.job_id, now), None)
        name = f"jobs/{done.job_id}/done.json"
        blob_store.write(function_settings.signals_bucket, name, raw, "application/json")
        ended = poll_until(
            lambda: (j := job_store.get_job(done.job_id)) and j.result_published_at and j,
            "the job to end and its result to be published",
            timeout_s=60.0,
            interval_s=0.05,
        )
        assert_ended_with(ended, DoneStatus.FAILED, done.error)
        node = json.loads(ended.error.details)["node_errors"]["1"]["errors"][0]
        assert node["type"] == "value_not_in_list"
        assert node["extra_info"]["received_value"] == absent
        published = poll_until(
            lambda: _pulled(subscriber, sub, done.job_id), "the result message", timeout_s=30.0
        )
        assert published["status"] == "failed"
        assert published["error"] == json.loads(ended.error.model_dump_json())
    finally:
        subscriber.delete_subscription(request={"subscription": sub})
