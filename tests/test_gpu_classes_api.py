"""GPU classes through the API (functions-framework app on fakes): GET /gpu-classes, a job's
options.gpu_class (unknown: 400, nothing written), and placement on VMs of its class only."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from comfyburst.domain.gpu_classes import CLASS_LABEL
from comfyburst.domain.jobs import FREE_PREEMPTIONS
from tests._api_support import FakeEnv, body, fake_env

CLASSES: list[dict[str, Any]] = [
    {
        "name": "l4-spot",
        "accelerator_type": "nvidia-l4",
        "spot": True,
        "zones": ["zone-a"],
        "price_per_hour": 0.2867,
        "templates": {"zone": "projects/P/regions/zone/instanceTemplates/spot"},
    },
    {
        "name": "l4",
        "accelerator_type": "nvidia-l4",
        "zones": ["zone-b"],
        "price_per_hour": 0.8536,
        "templates": {"zone": "projects/P/regions/zone/instanceTemplates/std"},
    },
]


def _env() -> FakeEnv:
    env = fake_env(
        vms=[("gpu-a1", "zone-a"), ("gpu-b1", "zone-b")],
        gpu_classes=CLASSES,
        preemption_fallback_class="l4",
    )
    # gpu-a1 has no class label (the default class, l4-spot); gpu-b1 is of class l4.
    std = env.fleet.vms["gpu-b1"]
    env.fleet.vms["gpu-b1"] = replace(std, labels={**std.labels, CLASS_LABEL: "l4"})
    return env


def test_gpu_classes_lists_what_a_caller_needs_only() -> None:
    response = _env().client.get("/gpu-classes")
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["default"] == "l4-spot" and answer["preemption_fallback"] == "l4"
    assert [(c["name"], c["spot"], c["price_per_hour"]) for c in answer["gpu_classes"]] == [
        ("l4-spot", True, 0.2867),
        ("l4", False, 0.8536),
    ]
    assert "instanceTemplates" not in response.get_data(as_text=True)
    assert "projects/" not in response.get_data(as_text=True)


def test_gpu_classes_refuses_other_methods() -> None:
    assert _env().client.post("/gpu-classes").status_code == 405


def test_unknown_class_is_a_400_naming_the_field_and_nothing_is_written() -> None:
    env = _env()
    response = env.submit(body(options={"gpu_class": "a100"}))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["field"] == "options.gpu_class"
    assert error["details"] == {"gpu_classes": ["l4-spot", "l4"]}
    assert env.nothing_written()
    assert not [vm for vm in env.fleet.vms.values() if vm.status == "RUNNING"]


def test_validate_refuses_an_unknown_class_too() -> None:
    env = _env()
    response = env.client.post(
        "/jobs:validate", json=body(options={"gpu_class": "a100"}), content_type=None
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "options.gpu_class"


def test_a_job_lands_on_a_vm_of_its_class_only() -> None:
    env = _env()
    std = env.submit(body(options={"gpu_class": "l4"})).get_json()
    assert std["state"] == "starting" and std["gpu_class"] == "l4"
    assert env.fleet.vms["gpu-b1"].status == "RUNNING"
    assert env.fleet.vms["gpu-a1"].status == "TERMINATED"
    # The only l4 VM is busy: the next l4 job waits, though a l4-spot VM is free.
    second = env.submit(body(options={"gpu_class": "l4"})).get_json()
    assert second["state"] == "queued"
    assert env.fleet.vms["gpu-a1"].status == "TERMINATED"
    # A job naming no class gets the default class and its VM.
    default = env.submit(body()).get_json()
    assert default["state"] == "starting" and default["gpu_class"] == "l4-spot"
    assert env.fleet.vms["gpu-a1"].status == "RUNNING"
    stored = env.store.get_job(default["job_id"])
    assert stored is not None and stored.vm is not None and stored.vm.name == "gpu-a1"


def _preempted(env: FakeEnv, job_id: str, preemptions: int) -> Any:
    from tests._completion_helpers import make_job

    job = make_job(job_id, env.clock.now(), vm=None).model_copy(
        update={"gpu_class": "l4-spot", "preemptions": preemptions, "attempt": preemptions + 1}
    )
    env.store.create_job(job)
    return job


def test_dispatch_moves_a_job_at_the_preemption_cap_to_the_fallback_class() -> None:
    from comfyburst.services.dispatch import Dispatcher

    env = _env()
    dispatcher = Dispatcher(env.store, env.fleet, env.clock, env.settings)
    below = dispatcher.dispatch(_preempted(env, "below-cap", FREE_PREEMPTIONS - 1))
    assert below.started and below.vm is not None and below.vm.name == "gpu-a1"
    assert below.job.gpu_class == "l4-spot" and below.job.gpu_class_reason is None
    at_cap = dispatcher.dispatch(_preempted(env, "at-cap", FREE_PREEMPTIONS))
    assert at_cap.started and at_cap.vm is not None and at_cap.vm.name == "gpu-b1"
    stored = env.store.get_job("at-cap")
    assert stored is not None and stored.gpu_class == "l4"
    assert "moved to l4" in (stored.gpu_class_reason or "")
