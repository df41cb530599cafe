"""The Compute stand-in as a pool of templates: insert, delete, stockouts, quota, hung VMs and
Spot preemption, driven through google-cloud-compute as the dispatcher drives it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from localcloud.compute import ComputeStandin, ComputeStandinConfig, Fault, GuestSpec
from tests._poll import poll_until

pytestmark = pytest.mark.emulator

PROJECT = "pool-test"
ZONE_A, ZONE_B, ZONE_C = "us-central1-a", "us-central1-b", "us-central1-c"
ZONE_EU = "europe-west4-a"

TEMPLATE = {
    "name": "gpu-l4",
    "properties": {
        "machineType": "g2-standard-8",
        "guestAccelerators": [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}],
        "labels": {"comfyburst-pool": "default"},
        "metadata": {"items": [{"key": "comfyburst-config", "value": "{}"}]},
        "scheduling": {"provisioningModel": "STANDARD", "onHostMaintenance": "TERMINATE"},
    },
}
SPOT_TEMPLATE = {
    "name": "gpu-l4-spot",
    "properties": {
        **TEMPLATE["properties"],  # type: ignore[dict-item]
        "scheduling": {"provisioningModel": "SPOT", "instanceTerminationAction": "STOP"},
    },
}

# The guest: report `preempted` as a long poll sees it change, and the SIGTERM it gets.
GUEST_SCRIPT = """
import os, signal, sys, time, urllib.request
host, out = os.environ["GCE_METADATA_HOST"], os.environ["OUT_DIR"]
name = urllib.request.urlopen(urllib.request.Request(
    f"http://{host}/computeMetadata/v1/instance/name", headers={"Metadata-Flavor": "Google"}
)).read().decode()

def note(what):
    with open(os.path.join(out, name + ".log"), "a") as fh:
        fh.write(what + "\\n")

def on_term(*_):
    note("SIGTERM")
    if os.environ.get("IGNORE_TERM") != "1":
        sys.exit(0)

def preempted(query=""):
    url = f"http://{host}/computeMetadata/v1/instance/preempted{query}"
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.read().decode(), answer.headers["ETag"]

signal.signal(signal.SIGTERM, on_term)
# The long poll waits for a change from the value read before "up" (last_etag): a change made
# any time after "up" is seen, however late the poll is opened.
_value, etag = preempted()
note("up")
value, _etag = preempted(f"?wait_for_change=true&last_etag={etag}")
note("preempted=" + value)
while True:
    time.sleep(0.05)
"""


@pytest.fixture(autouse=True)
def _wipe_localcloud() -> None:
    """Override conftest's wipe: each test here starts its own stand-in, not the shared cloud."""


class Pool:
    """One stand-in and the clients pointed at it."""

    def __init__(self, standin: ComputeStandin, out_dir: Path) -> None:
        options = ClientOptions(api_endpoint=standin.start())
        creds = AnonymousCredentials()
        self.standin = standin
        self.out_dir = out_dir
        self.instances = compute_v1.InstancesClient(credentials=creds, client_options=options)
        self.operations = compute_v1.ZoneOperationsClient(credentials=creds, client_options=options)
        self.templates = compute_v1.InstanceTemplatesClient(
            credentials=creds, client_options=options
        )

    def insert(self, name: str, zone: str = ZONE_A, template: str = "gpu-l4", **kw: Any) -> Any:
        return self.instances.insert_unary(
            request=compute_v1.InsertInstanceRequest(
                project=PROJECT,
                zone=zone,
                instance_resource=compute_v1.Instance(name=name, labels={"vm": name}),
                source_instance_template=f"projects/{PROJECT}/global/instanceTemplates/{template}",
                **kw,
            )
        )

    def wait_op(self, op: Any, zone: str = ZONE_A) -> compute_v1.Operation:
        return self.operations.wait(project=PROJECT, zone=zone, operation=op.name)

    def status(self, name: str, zone: str = ZONE_A) -> str | None:
        try:
            return str(self.instances.get(project=PROJECT, zone=zone, instance=name).status)
        except exceptions.NotFound:
            return None

    def guest_log(self, name: str) -> list[str]:
        path = self.out_dir / f"{name}.log"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def make_pool(tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    started: list[ComputeStandin] = []

    def make(guest_env: dict[str, str] | None = None, **overrides: Any) -> Pool:
        script = tmp_path / "guest.py"
        script.write_text(GUEST_SCRIPT)
        out_dir = tmp_path / "out"
        out_dir.mkdir(exist_ok=True)
        settings: dict[str, Any] = {
            "project": PROJECT,
            "zones": [ZONE_A, ZONE_B, ZONE_C, ZONE_EU],
            "templates": [TEMPLATE, SPOT_TEMPLATE],
            "staging_s": 0.05,
            "stopping_s": 0.05,
            "stop_grace_s": 3.0,
            "spot_shutdown_grace_s": 3.0,
            "guest": GuestSpec(
                argv=[sys.executable, str(script)],
                env={"OUT_DIR": str(out_dir), **(guest_env or {})},
            ),
            "log_dir": tmp_path / "logs",
        }
        settings.update(overrides)
        standin = ComputeStandin(ComputeStandinConfig(**settings))
        started.append(standin)
        return Pool(standin, out_dir)

    yield make
    for standin in started:
        standin.stop()


def test_insert_from_a_template_boots_a_vm_with_its_properties(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool()
    op = pool.insert("gpu-1", request_id="5f0c2a7e-1d7b-4d8e-9a51-0b7e6f3c2d11")
    assert pool.wait_op(op).status == compute_v1.Operation.Status.DONE
    vm = pool.instances.get(project=PROJECT, zone=ZONE_A, instance="gpu-1")
    assert vm.status == "RUNNING"
    assert vm.machine_type.endswith("/machineTypes/g2-standard-8")
    assert dict(vm.labels) == {"comfyburst-pool": "default", "vm": "gpu-1"}
    assert {i.key: i.value for i in vm.metadata.items} == {"comfyburst-config": "{}"}
    assert vm.guest_accelerators[0].accelerator_type.endswith("/nvidia-l4")
    poll_until(lambda: "up" in pool.guest_log("gpu-1"), "the guest to boot", timeout_s=10)
    # A retried insert with the same request id is the same operation; a new one conflicts.
    again = pool.insert("gpu-1", request_id="5f0c2a7e-1d7b-4d8e-9a51-0b7e6f3c2d11")
    assert again.name == op.name
    with pytest.raises(exceptions.Conflict):
        pool.insert("gpu-1")
    assert pool.standin.stats()["created"] == 1


def test_delete_powers_off_and_removes_the_vm(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool()
    pool.wait_op(pool.insert("gpu-1"))
    poll_until(lambda: "up" in pool.guest_log("gpu-1"), "the guest to boot", timeout_s=10)
    op = pool.instances.delete_unary(project=PROJECT, zone=ZONE_A, instance="gpu-1")
    assert pool.wait_op(op).status == compute_v1.Operation.Status.DONE
    assert pool.status("gpu-1") is None
    assert "SIGTERM" in pool.guest_log("gpu-1")
    stats = pool.standin.stats()
    assert (stats["created"], stats["deleted"]) == (1, 1)
    assert stats["billed_s"] > 0


def test_a_full_zone_fails_the_insert_operation_and_names_zones_with_room(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(guest=None, zone_capacity_vms={ZONE_A: 1, ZONE_B: 0})
    pool.wait_op(pool.insert("gpu-1"))
    done = pool.wait_op(pool.insert("gpu-2"))
    error = done.error.errors[0]
    assert error.code == "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
    assert f"zones/{ZONE_A}" in error.message
    info = next(d.error_info for d in error.error_details if d.error_info.reason)
    assert info.reason == "resource_availability"
    # B is full too and europe-west4 is another region: only C has room.
    assert dict(info.metadatas) == {
        "vmType": "g2-standard-8",
        "zone": ZONE_A,
        "attachment": "nvidia-l4:1",
        "zonesAvailable": ZONE_C,
    }
    assert done.http_error_status_code == 503
    assert pool.status("gpu-2") is None  # a failed insert leaves no instance behind
    # The zone it named takes the VM.
    assert not pool.wait_op(pool.insert("gpu-2", zone=ZONE_C), ZONE_C).error.errors


def test_sync_stockout_mode_and_plain_form(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(guest=None, zone_capacity_vms={ZONE_A: 0}, insert_stockout_mode="sync")
    with pytest.raises(exceptions.ServiceUnavailable) as caught:
        pool.insert("gpu-1")
    assert caught.value.reason == "resource_availability"
    assert caught.value.metadata["zonesAvailable"] == f"{ZONE_B},{ZONE_C}"
    assert pool.status("gpu-1") is None
    # A stockout fault without zones gives the plain ZONE_RESOURCE_POOL_EXHAUSTED.
    pool.standin.add_fault(Fault(kind="stockout", zone=ZONE_B, mode="operation"))
    done = pool.wait_op(pool.insert("gpu-1", zone=ZONE_B), ZONE_B)
    assert done.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"


def test_regional_gpu_quota_refuses_the_next_vm(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(guest=None, region_gpu_quota={"us-central1": 1})
    pool.wait_op(pool.insert("gpu-1"))
    with pytest.raises(exceptions.Forbidden) as caught:
        pool.insert("gpu-2", zone=ZONE_B)
    assert "NVIDIA_L4_GPUS" in caught.value.message
    assert caught.value.reason == "QUOTA_EXCEEDED"
    # Another region has its own quota; a stopped VM frees the GPU for a start.
    assert not pool.wait_op(pool.insert("gpu-3", zone=ZONE_EU), ZONE_EU).error.errors
    pool.wait_op(pool.instances.stop_unary(project=PROJECT, zone=ZONE_A, instance="gpu-1"))
    pool.wait_op(pool.insert("gpu-2", zone=ZONE_B), ZONE_B)
    with pytest.raises(exceptions.Forbidden):
        pool.instances.start_unary(project=PROJECT, zone=ZONE_A, instance="gpu-1")


def test_hung_staging_and_failed_creates(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(guest=None)
    pool.standin.add_fault(Fault(kind="staging_hang", instance="gpu-1"))
    pool.standin.add_fault(Fault(kind="create_failure", instance="gpu-2"))
    pool.insert("gpu-1")
    poll_until(lambda: pool.status("gpu-1") == "STAGING", "STAGING", timeout_s=10)
    time.sleep(0.3)  # many boot delays later, still hung
    assert pool.status("gpu-1") == "STAGING"
    pool.wait_op(pool.instances.delete_unary(project=PROJECT, zone=ZONE_A, instance="gpu-1"))
    assert pool.status("gpu-1") is None
    failed = pool.wait_op(pool.insert("gpu-2"))
    assert failed.error.errors[0].code == "INTERNAL_ERROR"
    assert pool.status("gpu-2") is None


def test_spot_preemption_as_compute_engine_does_it(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool()
    pool.wait_op(pool.insert("spot-1", template="gpu-l4-spot"))
    vm = pool.instances.get(project=PROJECT, zone=ZONE_A, instance="spot-1")
    assert vm.scheduling.provisioning_model == "SPOT"
    assert vm.scheduling.instance_termination_action == "STOP"
    poll_until(lambda: "up" in pool.guest_log("spot-1"), "the guest to boot", timeout_s=10)
    pool.wait_op(
        pool.instances.simulate_maintenance_event_unary(
            project=PROJECT, zone=ZONE_A, instance="spot-1"
        )
    )
    poll_until(lambda: pool.status("spot-1") == "TERMINATED", "TERMINATED", timeout_s=10)
    # The long poll saw TRUE before the shutdown signal; the VM stopped (its disk stays).
    assert pool.guest_log("spot-1") == ["up", "preempted=TRUE", "SIGTERM"]
    assert pool.standin.stats()["preempted"] == 1
    # Not a Spot VM any more running: the admin trigger refuses.
    assert not pool.standin.preempt(ZONE_A, "spot-1")


def test_a_guest_that_ignores_the_signal_is_powered_off_after_the_grace(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(guest_env={"IGNORE_TERM": "1"}, spot_shutdown_grace_s=0.5)
    pool.wait_op(pool.insert("spot-1", template="gpu-l4-spot"))
    poll_until(lambda: "up" in pool.guest_log("spot-1"), "the guest to boot", timeout_s=10)
    began = time.monotonic()
    assert pool.standin.preempt(ZONE_A, "spot-1")
    assert pool.status("spot-1") == "STOPPING"
    poll_until(lambda: pool.status("spot-1") == "TERMINATED", "TERMINATED", timeout_s=10)
    assert time.monotonic() - began >= 0.5
    assert pool.guest_log("spot-1")[-1] == "SIGTERM"


def test_delete_termination_action_and_random_preemption(make_pool: Callable[..., Pool]) -> None:
    deleting = json.loads(json.dumps(SPOT_TEMPLATE))
    deleting["name"] = "gpu-l4-spot-delete"
    deleting["properties"]["scheduling"]["instanceTerminationAction"] = "DELETE"
    pool = make_pool(guest=None, templates=[TEMPLATE, deleting], chaos_seed=7)
    pool.wait_op(pool.insert("spot-1", template="gpu-l4-spot-delete"))
    pool.wait_op(pool.insert("std-1"))
    pool.standin.fleet.set_preemption_rate(100.0)
    poll_until(
        lambda: pool.status("spot-1") is None, "the preempted VM to be deleted", timeout_s=10
    )
    assert pool.status("std-1") == "RUNNING"  # standard VMs are never preempted
    stats = pool.standin.stats()
    assert (stats["preempted"], stats["deleted"]) == (1, 1)


def test_templates_over_the_api_and_bad_references(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(guest=None, templates=[])
    with pytest.raises(exceptions.NotFound):
        pool.insert("gpu-1")
    pool.templates.insert_unary(
        project=PROJECT,
        instance_template_resource=compute_v1.InstanceTemplate.from_json(json.dumps(TEMPLATE)),
    )
    got = pool.templates.get(project=PROJECT, instance_template="gpu-l4")
    assert got.properties.machine_type == "g2-standard-8"
    pool.wait_op(pool.insert("gpu-1"))
    with pytest.raises(exceptions.NotFound):
        pool.insert("gpu-2", zone="us-east9-z")  # no such zone
    regional = compute_v1.InsertInstanceRequest(
        project=PROJECT,
        zone=ZONE_A,
        instance_resource=compute_v1.Instance(name="gpu-3"),
        source_instance_template=f"projects/{PROJECT}/regions/europe-west4/instanceTemplates/x",
    )
    with pytest.raises(exceptions.BadRequest):
        pool.instances.insert_unary(request=regional)


def test_capacity_changed_while_running_moves_the_stockout(make_pool: Callable[..., Pool]) -> None:
    import requests

    pool = make_pool(guest=None)
    pool.wait_op(pool.insert("gpu-1"))
    url = f"{pool.standin.base_url}/_standin/capacity"
    # us-central1-a runs out: the VM already up stays up, the next insert there is refused and
    # Compute names the zone of the same region that still has room.
    body = {"zone_capacity_vms": {ZONE_A: 0, ZONE_B: 0}}
    assert requests.post(url, json=body, timeout=10).json()["zone_capacity_vms"] == {
        ZONE_A: 0, ZONE_B: 0,
    }  # fmt: skip
    assert pool.status("gpu-1") == "RUNNING"
    failed = pool.wait_op(pool.insert("gpu-2"))
    assert failed.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
    assert pool.status("gpu-2") is None
    (info,) = [d.error_info for d in failed.error.errors[0].error_details if d.error_info.reason]
    assert info.metadatas["zonesAvailable"] == ZONE_C
    # The stockout moves to the other region: us-central1-a has room again, europe none.
    pool.standin.set_capacity({"zone_capacity_vms": {ZONE_EU: 0}})
    assert not pool.wait_op(pool.insert("gpu-2")).error.errors
    refused = pool.wait_op(pool.insert("gpu-3", zone=ZONE_EU), ZONE_EU)
    assert refused.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
    # A regional quota set now refuses the next VM of that region.
    pool.standin.set_capacity({"region_gpu_quota": {"us-central1": 2}})
    with pytest.raises(exceptions.Forbidden):
        pool.insert("gpu-4", zone=ZONE_C)
    assert requests.get(url, timeout=10).json() == {
        "zone_capacity_vms": {}, "region_gpu_quota": {"us-central1": 2},
    }  # fmt: skip
    # Bad input: 400 with a machine-readable body, nothing changed.
    for bad in ({"zone_capacity_vms": {ZONE_A: -1}}, {"zone_capacity_vms": {"mars-1a": 1}}, []):
        response = requests.post(url, json=bad, timeout=10)
        assert response.status_code == 400, bad
        assert response.json()["error"]["errors"][0]["reason"] == "invalid"
    assert requests.get(url, timeout=10).json()["region_gpu_quota"] == {"us-central1": 2}
