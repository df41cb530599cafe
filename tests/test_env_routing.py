"""Routing jobs to the VMs that hold their environment (issue #24, layer 3): the pure ranking,
the dispatcher passing the job's environment into it, and the environment's receipt phase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from comfyburst.domain.jobs import new_job
from comfyburst.domain.receipts import merge_phases, receipt_of
from comfyburst.domain.scheduling import ZoneState, rank_candidates
from comfyburst.ports import VmStatus
from comfyburst.schema import (
    DoneManifest,
    JobPhases,
    JobRequest,
    Lease,
    VmRecord,
    WorkerTimings,
)
from comfyburst.services.dispatch import Dispatcher
from tests._api_support import WORKFLOW, make_settings
from tests.fakes import FakeFleet, FixedClock, InMemoryJobStore

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ENV_A = "env-" + "a" * 64
ENV_B = "env-" + "b" * 64
MODEL_1, MODEL_2 = "checkpoints/one.safetensors", "loras/two.safetensors"


def _fleet(*names: str, zone: str = "zone-a") -> list[VmStatus]:
    return [VmStatus(name=name, zone=zone, status="TERMINATED") for name in names]


def _record(name: str, models: tuple[str, ...] = (), envs: tuple[str, ...] = ()) -> VmRecord:
    return VmRecord(name=name, zone="zone-a", models_cached=list(models), environments=list(envs))


# (case, records by VM, the job's environment, the job's models, the order's fixed prefix)
CASES = [
    (
        "the environment beats the models",
        {"v1": _record("v1", models=(MODEL_1, MODEL_2)), "v2": _record("v2", envs=(ENV_A,))},
        ENV_A,
        (MODEL_1, MODEL_2),
        ["v2", "v1"],
    ),
    (
        "among VMs with the environment, more of the models first",
        {
            "v1": _record("v1", envs=(ENV_A,)),
            "v2": _record("v2", models=(MODEL_1,), envs=(ENV_B, ENV_A)),
            "v3": _record("v3", models=(MODEL_1, MODEL_2)),
        },
        ENV_A,
        (MODEL_1,),
        ["v2", "v1", "v3"],
    ),
    (
        "another environment on the disk counts for nothing",
        {"v1": _record("v1", envs=(ENV_B,)), "v2": _record("v2", models=(MODEL_1,))},
        ENV_A,
        (MODEL_1,),
        ["v2"],
    ),
    (
        "a job without an environment: the models decide, as before",
        {"v1": _record("v1", envs=(ENV_A,)), "v2": _record("v2", models=(MODEL_1,))},
        None,
        (MODEL_1,),
        ["v2"],
    ),
    (
        "a VM no document knows yet holds no environment",
        {"v2": _record("v2", envs=(ENV_A,))},
        ENV_A,
        (),
        ["v2"],
    ),
]


@pytest.mark.parametrize(
    ("records", "environment", "models", "first"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_free_vm_with_the_environment_then_its_models_then_any(
    records: dict[str, VmRecord], environment: str | None, models: tuple[str, ...], first: list[str]
) -> None:
    fleet = _fleet("v0", "v1", "v2", "v3", "v4")
    ranked = rank_candidates("job-1", models, fleet, records, NOW, environment=environment)
    names = [c.name for c in ranked]
    assert sorted(names) == ["v0", "v1", "v2", "v3", "v4"]  # every free VM, each once
    assert names[: len(first)] == first
    holds = [c.name for c in ranked if c.has_environment]
    assert holds == [n for n in names if environment in records.get(n, _record(n)).environments]


def test_without_an_environment_the_order_is_the_one_before_environments() -> None:
    fleet = [*_fleet("a1", "a2", "a3"), *_fleet("b1", "b2", zone="zone-b")]
    records = {
        "a1": _record("a1", models=(MODEL_1,), envs=(ENV_A,)),
        "a3": _record("a3", envs=(ENV_A, ENV_B)),
        "b2": _record("b2", models=(MODEL_1, MODEL_2)),
    }
    zones = {"zone-b": ZoneState(capacity_at=NOW - timedelta(seconds=5))}
    for job_id in ("job-1", "job-2", "job-3"):
        plain = rank_candidates(job_id, [MODEL_1], fleet, records, NOW, zones)
        assert plain == rank_candidates(job_id, [MODEL_1], fleet, records, NOW, zones, None)
        assert not any(c.has_environment for c in plain)
        assert plain[0].name == "b2"  # most models, then the zone with recent capacity


def test_the_environment_beats_a_busier_zone_and_never_frees_a_busy_vm() -> None:
    fleet = [
        *_fleet("a1", "a2"),
        VmStatus(name="a3", zone="zone-a", status="RUNNING"),
        *_fleet("b1", "b2", "b3", zone="zone-b"),
    ]
    leased = Lease(job_id="other", expires_at=NOW + timedelta(minutes=5))
    cooling = NOW + timedelta(minutes=5)
    records = {
        "a1": _record("a1", envs=(ENV_A,)),  # free, in the zone with two busy VMs
        "a2": _record("a2", envs=(ENV_A,)).model_copy(update={"lease": leased}),
        "a3": _record("a3", envs=(ENV_A,)),  # running
        "b1": _record("b1", envs=(ENV_A,)).model_copy(update={"cooldown_until": cooling}),
    }
    ranked = rank_candidates("job-1", [], fleet, records, NOW, environment=ENV_A)
    assert [c.name for c in ranked[:1]] == ["a1"]
    assert {c.name for c in ranked} == {"a1", "b2", "b3"}
    # Without the environment the quieter zone wins.
    assert rank_candidates("job-1", [], fleet, records, NOW)[0].zone == "zone-b"


# --- the dispatcher passes the job's environment into the ranking ----------------------------


def _queued_job(store: InMemoryJobStore, clock: FixedClock, job_id: str, **options: object):
    request = JobRequest.model_validate(
        {
            "workflow": WORKFLOW,
            "models": [
                {"kind": "loras", "filename": "two.safetensors", "url": "https://civitai.com/l"}
            ],
            "options": options,
        }
    )
    job = new_job(
        job_id=job_id,
        request=request,
        workflow_bytes=100,
        now=clock.now(),
        max_attempts=3,
        ttl_days=1,
    )
    store.create_job(job)
    return job


def test_the_dispatcher_starts_the_vm_holding_the_jobs_environment() -> None:
    store, clock = InMemoryJobStore(), FixedClock()
    fleet = FakeFleet([(f"v{i}", "zone-a") for i in range(6)])
    dispatcher = Dispatcher(store, fleet, clock, make_settings())
    store.put_vm(VmRecord(name="v1", zone="zone-a", models_cached=[MODEL_2]), None)
    store.put_vm(VmRecord(name="v4", zone="zone-a", environments=[ENV_A]), None)
    in_env = dispatcher.dispatch(_queued_job(store, clock, "job-env", environment=ENV_A))
    assert in_env.started and in_env.vm.name == "v4"
    leased, _ = store.get_vm("v4")
    assert leased is not None and leased.environments == [ENV_A]  # the lease keeps the list
    # v4 is taken now; a job without the environment goes where its model is, as before.
    plain = dispatcher.dispatch(_queued_job(store, clock, "job-plain"))
    assert plain.started and plain.vm.name == "v1"


# --- the environment's phase and timings on the receipt ---------------------------------------


def _at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def _job(environment: str | None):
    options = {"environment": environment} if environment else {}
    request = JobRequest.model_validate({"workflow": WORKFLOW, "options": options})
    job = new_job(
        job_id="job-r", request=request, workflow_bytes=1, now=NOW, max_attempts=3, ttl_days=1
    )
    return job.model_copy(update={"dispatched_at": NOW})


def test_the_environment_phase_rides_to_the_job_and_counts_in_its_run() -> None:
    worker = JobPhases(
        agent_up_at=_at(20),
        claimed_at=_at(22),
        environment_ready_at=_at(40),
        models_ready_at=_at(41),
        first_step_at=_at(42),
        done_at=_at(50),
    )
    phases = merge_phases(_job(ENV_A), worker, running_at=_at(5))
    assert phases.environment_ready_at == _at(40)
    run_order = [phases.claimed_at, phases.environment_ready_at, phases.first_step_at]
    assert all(run_order) and run_order == sorted(run_order)
    receipt = receipt_of(phases, "l4", 3.6)
    # The layer's download, unpack and ComfyUI restart are VM seconds of this job's run.
    assert (receipt.boot_s, receipt.run_s, receipt.billed_s) == (17.0, 28.0, 45.0)
    timings = WorkerTimings(environment_s=18.0, environment_downloaded=True)
    manifest = DoneManifest.model_validate(
        {
            "job_id": "job-r",
            "attempt": 1,
            "vm": "v1",
            "status": "succeeded",
            "timings": timings.model_dump(mode="json"),
            "written_at": _at(50).isoformat(),
            "phases": worker.model_dump(mode="json"),
        }
    )
    assert manifest.timings.environment_s == 18.0 and manifest.timings.environment_downloaded
    assert manifest.phases is not None and manifest.phases.environment_ready_at == _at(40)


def test_a_job_without_an_environment_has_no_environment_phase_or_timings() -> None:
    worker = JobPhases(claimed_at=_at(22), models_ready_at=_at(30), done_at=_at(50))
    phases = merge_phases(_job(None), worker, running_at=None)
    assert phases.environment_ready_at is None
    timings = WorkerTimings()
    assert timings.environment_s is None and timings.environment_downloaded is None
    assert receipt_of(phases, "l4", 3.6).run_s == 28.0
