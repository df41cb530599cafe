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
from tests._poll import poll_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Its own cloud: a Spot template pool (no VMs at the start, created on demand) instead of the
    shared clouds' fixed VMs; one start for the module's tests."""
    from localcloud.scenarios.harness import cloud_config, warm_up

    config = replace(
        cloud_config(tmp_path_factory.mktemp("template-pool"), pool_size=2),
        pool_template=True,
        spot=True,
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


def test_a_preempted_spot_vm_requeues_its_job_which_then_succeeds(
    cloud: Any, localcloud_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from comfyburst import wiring
    from comfyburst.domain.scheduling import vm_name
    from comfyburst.settings import FunctionSettings
    from localcloud.scenarios.harness import arm_standin_faults
    from tests._e2e_support import STANDIN_FAULTS, with_node

    env = localcloud_env
    client = ApiClient(ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="none"))
    slow = with_node(invert_workflow(), "ImageBlur", blur_radius=1, sigma=1.0)
    job = client.submit({"workflow": slow, "options": {"timeout_s": 300}})
    # The VM it creates is named after job, attempt and zone: arm the slow node before it boots.
    zones = cloud.config.zones
    names = [vm_name("comfyburst-gpu", job["job_id"], a, z) for a in (1, 2) for z in zones]
    arm_standin_faults(cloud.config.state_dir, names, STANDIN_FAULTS)

    def in_the_slow_node() -> bool:
        seen = client.get(job["job_id"])
        return seen["state"] == "running" and (seen.get("progress") or {}).get("node") == "5"

    poll_until(in_the_slow_node, "the job's slow node to run", timeout_s=120, interval_s=0.2)
    (vm,) = [v for v in _instances(env) if v["status"] == "RUNNING"]
    compute = env["COMFYBURST_COMPUTE_ENDPOINT"]
    preempt = f"{compute}/_standin/zones/{vm['zone']}/instances/{vm['name']}/preempt"
    requests.post(preempt, timeout=10).raise_for_status()
    done = client.wait(job["job_id"], poll_s=0.3, timeout_s=280)
    assert done["state"] == "succeeded", done.get("error")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    stored = wiring.job_store(FunctionSettings()).get_job(job["job_id"])
    # Requeued by the worker as a preemption: a new attempt that does not count.
    assert (stored.attempt, stored.preemptions) == (2, 1)
    stats = requests.get(f"{compute}/_standin/stats", timeout=10).json()
    assert stats["preempted"] == 1
