"""End to end on the local cloud: a job naming a checkpoint the VM's ComfyUI does not see ends
`failed` with the node's error, and its result message is published.

The job brings its checkpoint (so pre-flight accepts it), the worker fetches it, and the
ComfyUI stand-in, which holds no checkpoint, refuses the prompt with ComfyUI's own payload
(`value_not_in_list`, `input_config` a list inside a list): the answer that, stored as it came,
Firestore refused, so the job stayed `running` forever.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from comfyburst.schema import ModelKind, ModelSpec, ResultMessage
from localcloud.scenarios.harness import Observer, cloud_config, running_cloud
from tests._model_server import ModelServer
from tests._poll import poll_until
from tests._worker_support import make_request

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

CHECKPOINT = "tiny.safetensors"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Its own cloud: its model server's loopback host:port must be an allowed model host
    when the functions and workers start, and that port is only known once the server runs."""
    state = tmp_path_factory.mktemp("ckpt-cloud")
    model = state / "model.safetensors"
    model.write_bytes(os.urandom(512 * 1024))
    with ModelServer({f"/{CHECKPOINT}": model}) as server:
        settings_env = {"COMFYBURST_HTTP_MODEL_HOSTS": server.hostport}
        config = cloud_config(state, pool_size=1, settings_env=settings_env)
        with running_cloud(config) as running:
            observer = Observer(running.env)
            try:
                yield SimpleNamespace(
                    env=dict(running.env),
                    observer=observer,
                    model=ModelSpec(
                        kind=ModelKind.CHECKPOINTS,
                        filename=CHECKPOINT,
                        url=server.url(f"/{CHECKPOINT}"),
                        sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
                    ),
                )
            finally:
                observer.close()


@pytest.fixture
def localcloud_env(cloud: SimpleNamespace) -> dict[str, str]:
    """This module's cloud (conftest's autouse wipe empties it before the test)."""
    return cloud.env


def checkpoint_workflow(ckpt_name: str) -> dict[str, Any]:
    """ComfyUI's missing-checkpoint transcript's workflow, naming `ckpt_name`."""
    path = Path(__file__).parent / "test_data" / "comfyui_api" / "prompt_errors.json"
    case = json.loads(path.read_text())["missing_checkpoint_file"]
    workflow: dict[str, Any] = case["request"]["json"]["prompt"]
    workflow["1"]["inputs"]["ckpt_name"] = ckpt_name
    return workflow


def _result(observer: Observer, job_id: str, seen: list[dict[str, Any]]) -> Any:
    seen.extend(observer.pull_results(idle_s=0.5, max_s=5.0))
    mine = [m for m in seen if m["attributes"].get("job_id") == job_id]
    return mine and ResultMessage.model_validate_json(mine[-1]["data"])


def test_a_checkpoint_the_vm_lacks_fails_the_job_with_the_node_error(cloud):
    api = cloud.env["COMFYBURST_API_URL"]
    body = make_request(checkpoint_workflow(CHECKPOINT), [cloud.model]).model_dump(mode="json")
    answer = requests.post(f"{api}/jobs", json=body, timeout=60)
    assert answer.status_code == 202, answer.text  # pre-flight: the job brings the checkpoint
    job_id = answer.json()["job_id"]

    def ended() -> dict[str, Any] | None:
        view = requests.get(f"{api}/jobs/{job_id}", timeout=30).json()
        return view if view["state"] in ("succeeded", "failed", "cancelled", "timed_out") else None

    view = poll_until(ended, "the job to end", timeout_s=240.0, interval_s=0.5)
    assert view["state"] == "failed", view
    error = view["error"]
    assert error["type"] == "validation_error", error
    assert (error["node_id"], error["node_type"]) == ("1", "CheckpointLoaderSimple")
    assert error["message"] == f"Value not in list: ckpt_name: '{CHECKPOINT}' not in []"
    # ComfyUI's payload, kept as JSON text: the array inside the array is there.
    node = json.loads(error["details"])["node_errors"]["1"]["errors"][0]
    assert node["extra_info"]["input_config"][0] == []
    assert node["extra_info"]["received_value"] == CHECKPOINT

    seen: list[dict[str, Any]] = []
    message = poll_until(
        lambda: _result(cloud.observer, job_id, seen), "the result message", timeout_s=60.0
    )
    assert message.status.value == "failed"
    assert message.error is not None and message.error.model_dump(mode="json") == error
