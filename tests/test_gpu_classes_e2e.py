"""End to end with two GPU classes (a Spot class and a standard one, in two regions): a job of
the standard class waits while its zone is out of capacity, the Spot class's draining worker
does not take it, and once capacity is back it runs on a VM of its own class, created from
that class's regional template."""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
import requests

from comfyburst.client import ApiClient, ClientSettings
from localcloud.config import LocalGpuClass
from tests._e2e_support import invert_workflow
from tests.test_e2e_template_pool import _instances, localcloud_env  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

SPOT = LocalGpuClass("l4-spot", ("us-central1-a",), spot=True, price_per_hour=0.2867)
STANDARD = LocalGpuClass("l4", ("us-east4-a",), price_per_hour=0.8536)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Its own cloud: two GPU classes (a Spot one and a standard fallback) instead of the one
    pool, as Compute's stand-in and the functions are configured at start."""
    from localcloud.scenarios.harness import cloud_config, running_cloud

    base = cloud_config(
        tmp_path_factory.mktemp("gpu-classes"),
        pool_size=1,
        # A short drain: the Spot VM passes the queued job by, then powers off.
        settings_env={"COMFYBURST_STOCKOUT_COOLDOWN_S": "1", "COMFYBURST_DRAIN_GRACE_S": "10"},
    )
    config = replace(base, gpu_classes=(SPOT, STANDARD), preemption_fallback_class="l4")
    with running_cloud(config) as running:  # its env exported into this process
        yield running


def _capacity(env: dict[str, str], zones: dict[str, int]) -> None:
    url = f"{env['COMFYBURST_COMPUTE_ENDPOINT']}/_standin/capacity"
    requests.post(url, json={"zone_capacity_vms": zones}, timeout=10).raise_for_status()


def _until(what: str, check: Any, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return found


def test_a_job_runs_on_its_class_only(localcloud_env: dict[str, str]) -> None:
    from comfyburst import wiring
    from comfyburst.settings import FunctionSettings

    env = localcloud_env
    client = ApiClient(ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="none"))
    listing = client.gpu_classes()
    assert [c["name"] for c in listing["gpu_classes"]] == ["l4-spot", "l4"]
    assert listing["default"] == "l4-spot" and listing["preemption_fallback"] == "l4"

    _capacity(env, {"us-east4-a": 0})  # the standard class's only zone is out of L4s
    spot_job = client.submit({"workflow": invert_workflow(), "options": {"timeout_s": 240}})
    done = client.wait(spot_job["job_id"], poll_s=0.3, timeout_s=240)
    assert done["state"] == "succeeded", done.get("error")
    assert done["gpu_class"] == "l4-spot"
    (spot_vm,) = _instances(env)
    assert spot_vm["labels"]["comfyburst-class"] == "l4-spot"
    assert spot_vm["zone"] == "us-central1-a"
    assert spot_vm["source_template"].endswith(
        "/regions/us-central1/instanceTemplates/comfyburst-gpu-l4-spot"
    )

    # The Spot VM is draining now: a queued job of the standard class is not its to take.
    std = client.submit(
        {"workflow": invert_workflow(), "options": {"timeout_s": 300, "gpu_class": "l4"}}
    )
    assert std["state"] == "queued" and std["gpu_class"] == "l4"
    _until(
        "the Spot VM never powered off after its drain",
        lambda: all(v["status"] == "TERMINATED" for v in _instances(env)),
    )
    # The drain passed it by. The reaper keeps trying a create in us-east4-a each period
    # (briefly `starting`, given back on the refusal), so wait for it between two tries.
    waiting = _until(
        "the standard job back in the queue after a refused create",
        lambda: (job := client.get(std["job_id"]))["state"] == "queued" and job,
    )
    assert waiting["queued_reason"] == "all zones out of capacity"
    assert [v["name"] for v in _instances(env)] == [spot_vm["name"]]  # nothing made for it

    _capacity(env, {})  # capacity is back: the reaper's dispatch creates a VM of class l4
    done = client.wait(std["job_id"], poll_s=0.3, timeout_s=240)
    assert done["state"] == "succeeded", done.get("error")
    stored = wiring.job_store(FunctionSettings()).get_job(std["job_id"])
    assert stored is not None and stored.vm is not None
    (std_vm,) = [v for v in _instances(env) if v["name"] == stored.vm.name]
    assert std_vm["labels"]["comfyburst-class"] == "l4"
    assert std_vm["zone"] == "us-east4-a"
    assert std_vm["source_template"].endswith(
        "/regions/us-east4/instanceTemplates/comfyburst-gpu-l4"
    )
    assert std_vm["metadata"].get("comfyburst-class") == "l4"  # what its worker reads
