"""End to end on a pool of templates, as Terraform now deploys it: the local cloud starts with
zero VMs; the first job creates one from the instance template, runs on it (worker + ComfyUI
stand-in) and leaves it stopped; the next job reuses it instead of creating another."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
import requests

from comfyburst.client import ApiClient, ClientSettings
from localcloud.cloud import LocalCloud
from tests._e2e_support import invert_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from localcloud.harness import cloud_config, warm_up

    config = replace(
        cloud_config(tmp_path_factory.mktemp("template-pool"), pool_size=2),
        pool_template=True,
    )
    running = LocalCloud(config)
    running.start()
    try:
        warm_up(running.env)
        yield running
    finally:
        running.stop()


@pytest.fixture
def localcloud_env(cloud: Any) -> dict[str, str]:
    """This module's own cloud (conftest's autouse wipe wipes it between tests)."""
    return dict(cloud.env)


def _instances(env: dict[str, str]) -> list[dict[str, Any]]:
    response = requests.get(f"{env['COMFYBURST_COMPUTE_ENDPOINT']}/_standin/instances", timeout=10)
    response.raise_for_status()
    return list(response.json()["instances"])


def test_the_first_job_creates_the_first_vm_and_the_next_reuses_it(
    localcloud_env: dict[str, str],
) -> None:
    env = localcloud_env
    assert _instances(env) == []  # the deployment holds no VM
    client = ApiClient(ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="none"))
    first = client.submit({"workflow": invert_workflow(), "options": {"timeout_s": 240}})
    done = client.wait(first["job_id"], poll_s=0.3, timeout_s=240)
    assert done["state"] == "succeeded", done.get("error")
    (vm,) = _instances(env)
    assert vm["labels"]["comfyburst-origin"] == "dispatcher"
    assert vm["source_template"].endswith("/global/instanceTemplates/comfyburst-gpu")
    # After its drain the worker powers the VM off; it stays (its disk keeps the models).
    deadline = time.monotonic() + 120
    while _instances(env)[0]["status"] != "TERMINATED":
        assert time.monotonic() < deadline, "the created VM was never stopped"
        time.sleep(0.5)
    second = client.submit({"workflow": invert_workflow(), "options": {"timeout_s": 240}})
    done = client.wait(second["job_id"], poll_s=0.3, timeout_s=240)
    assert done["state"] == "succeeded", done.get("error")
    assert [v["name"] for v in _instances(env)] == [vm["name"]]  # reused, not created
