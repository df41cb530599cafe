"""Dispatch per GPU class on the Firestore emulator and the Compute stand-in: each class
creates within its own limits and zones, and a stopped VM is reused by jobs of its class only."""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from comfyburst.domain.gpu_classes import GpuClass
from comfyburst.schema import Job
from comfyburst.states import JobState
from tests._poll import poll_until
from tests.test_dispatch_create import EU_A, US_A, US_B, Pool, make_pool  # noqa: F401

pytestmark = pytest.mark.emulator

TEMPLATE = "global/instanceTemplates/gpu-l4"  # the stand-in's one template serves every region
A = GpuClass(
    name="l4-spot",
    spot=True,
    zones=[US_A],
    templates={"us-central1": TEMPLATE},
    max_vms=1,
    max_vms_per_zone=1,
)
B = GpuClass(
    name="l4",
    zones=[US_B, EU_A],
    templates={"us-central1": TEMPLATE, "europe-west4": TEMPLATE},
    max_vms=2,
    max_vms_per_zone=1,
)


def _classed(pool: Pool, gpu_class: str, index: int) -> Job:
    job = pool.job(index).model_copy(update={"gpu_class": gpu_class})
    return pool.store.update_job(job.job_id, lambda _: job)


def test_each_class_creates_within_its_own_limits_and_reuses_only_its_vms(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool([], settings={"gpu_classes": [A, B]})
    first = pool.dispatcher.dispatch(_classed(pool, "l4-spot", 0))
    assert first.started and first.vm is not None and first.vm.zone == US_A
    assert pool.vm(first.vm.name)["labels"]["comfyburst-class"] == "l4-spot"
    # Class l4-spot is at its limit (1): its next job waits, while class l4 still creates.
    waiting = pool.dispatcher.dispatch(_classed(pool, "l4-spot", 1))
    assert not waiting.started and waiting.job.state is JobState.QUEUED
    other = pool.dispatcher.dispatch(_classed(pool, "l4", 2))
    assert other.started and other.vm is not None and other.vm.zone == US_B
    assert pool.vm(other.vm.name)["labels"]["comfyburst-class"] == "l4"

    # The l4-spot VM stops and its lease goes: an l4 job does not take it (it creates in the
    # class's next zone), the waiting l4-spot job does.
    pool.fleet.stop(US_A, first.vm.name, str(uuid.uuid4()))
    poll_until(
        lambda: pool.vm(first.vm.name)["status"] == "TERMINATED", "the VM stopped", timeout_s=30
    )
    record, version = pool.store.get_vm(first.vm.name)
    assert record is not None
    pool.store.put_vm(record.model_copy(update={"lease": None}), version)
    third = pool.dispatcher.dispatch(_classed(pool, "l4", 3))
    assert third.started and third.vm is not None
    assert third.vm.name != first.vm.name and third.vm.zone == EU_A
    again = pool.dispatcher.dispatch(pool.store.get_job(waiting.job.job_id))
    assert again.started and again.vm is not None and again.vm.name == first.vm.name
    assert {v["name"] for v in pool.standin.instances()} == {
        first.vm.name,
        other.vm.name,
        third.vm.name,
    }
