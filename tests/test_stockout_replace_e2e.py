"""End to end (issue #22 item 6): a stockout that holds the zone of every stopped VM of a class
at its `max_vms` no longer pins the pool. The job still runs: the stopped VM is deleted and a
new one is created in the zone with capacity, on the local cloud (Compute stand-in, emulators,
the API, the reaper, a worker with the ComfyUI stand-in on each VM)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import requests

from comfyburst.client import ApiClient, ClientSettings
from localcloud.cloud import LocalCloud
from tests._e2e_support import invert_workflow
from tests._poll import poll_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

US_A, EAST = "us-central1-a", "us-east4-a"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Its own cloud: a template pool of at most one VM (stopped ones count) in two regions."""
    from localcloud.scenarios.harness import cloud_config, warm_up

    config = replace(
        cloud_config(tmp_path_factory.mktemp("stockout-replace"), pool_size=1, zones=(US_A, EAST)),
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


def _stock_out(env: dict[str, str], *zones: str) -> None:
    """These zones have no capacity from now on (the others all they need)."""
    body = {"zone_capacity_vms": {zone: 0 for zone in zones}}
    url = f"{env['COMFYBURST_COMPUTE_ENDPOINT']}/_standin/capacity"
    requests.post(url, json=body, timeout=10).raise_for_status()


def test_a_job_runs_when_every_stopped_vm_of_its_class_sits_in_a_stocked_out_zone(
    localcloud_env: dict[str, str],
) -> None:
    env = localcloud_env
    client = ApiClient(ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="none"))
    _stock_out(env, EAST)  # the first VM goes to us-central1-a
    first = client.submit({"workflow": invert_workflow(), "options": {"timeout_s": 240}})
    done = client.wait(first["job_id"], poll_s=0.3, timeout_s=240)
    assert done["state"] == "succeeded", done.get("error")
    (old,) = _instances(env)
    assert old["zone"] == US_A
    poll_until(
        lambda: _instances(env)[0]["status"] == "TERMINATED", "the VM to stop", timeout_s=120
    )
    # The class is at max_vms with its only VM stopped where no start can succeed, for good.
    _stock_out(env, US_A)
    second = client.submit({"workflow": invert_workflow(), "options": {"timeout_s": 180}})
    done = client.wait(second["job_id"], poll_s=0.3, timeout_s=240)
    assert done["state"] == "succeeded", (done.get("error"), done.get("queued_reason"))
    (new,) = _instances(env)  # the old VM was deleted: the class holds one VM, as before
    assert new["zone"] == EAST and new["name"] != old["name"]
