"""The operators' log lines (domain/ops_metrics.py, services/_ops_log.py): fields and JSON."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from comfyburst.domain.gpu_classes import CLASS_LABEL
from comfyburst.domain.ops_metrics import (
    JOB_ENDED,
    PHASES,
    job_ended_fields,
    job_phase_fields,
    phase_seconds,
    pool_gauges,
)
from comfyburst.logs import JsonFormatter
from comfyburst.ports import VmStatus
from comfyburst.schema import JobPhases, Receipt
from comfyburst.services._ops_log import log_job_ended
from comfyburst.states import JobState
from tests._completion_helpers import lease_record, make_job

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_phases_follow_run_order_and_skip_steps_a_job_did_not_take():
    booted = JobPhases(
        requested_at=_at(0),
        running_at=_at(20),
        guest_booted_at=_at(50),
        agent_up_at=_at(58),
        claimed_at=_at(60),
        comfyui_ready_at=_at(75),
        done_at=_at(100),
    )
    assert phase_seconds(booted) == {
        "vm_start": 20.0,
        "guest_boot": 30.0,
        "agent_start": 8.0,
        "claim": 2.0,
        "comfyui_start": 15.0,
        "run": 25.0,
    }
    # A draining VM's claim: no boot steps, so no boot phases.
    warm = JobPhases(claimed_at=_at(0), models_ready_at=_at(1.5), done_at=_at(4))
    assert phase_seconds(warm) == {"models": 1.5, "run": 2.5}
    assert phase_seconds(None) == {}
    assert set(phase_seconds(booted)) <= set(PHASES)


def test_a_step_recorded_before_an_earlier_one_counts_from_the_latest():
    # ComfyUI up before the claim (started at boot): its phase is 0, and `run` counts from it.
    phases = JobPhases(agent_up_at=_at(0), comfyui_ready_at=_at(5), claimed_at=_at(8))
    phases = phases.model_copy(update={"done_at": _at(20)})
    assert phase_seconds(phases) == {"claim": 8.0, "comfyui_start": 0.0, "run": 12.0}


def test_job_ended_carries_state_class_and_receipt():
    job = make_job("j1", NOW, JobState.SUCCEEDED)
    receipt = Receipt(
        gpu_class="l4",
        price_per_hour=0.72,
        boot_s=30.0,
        idle_s=0.0,
        run_s=70.0,
        billed_s=100.0,
        cost_usd=0.02,
    )
    fields = job_ended_fields(job.model_copy(update={"receipt": receipt}))
    assert fields == {
        "event": JOB_ENDED,
        "job_id": "j1",
        "state": "succeeded",
        "gpu_class": "l4",
        "billed_s": 100.0,
        "cost_usd": 0.02,
    }
    cancelled = job_ended_fields(make_job("j2", NOW, JobState.CANCELLED))
    assert (cancelled["gpu_class"], cancelled["cost_usd"], cancelled["billed_s"]) == (
        "default",
        0.0,
        0.0,
    )
    assert job_phase_fields(make_job("j2", NOW, JobState.CANCELLED)) == []


def test_pool_gauges_count_per_class_what_the_reaper_sees():
    queued = make_job("q", NOW, timeout_s=60)
    late = make_job("late", NOW - timedelta(seconds=120), JobState.RUNNING, vm="a-1", timeout_s=60)
    ended = make_job("done", NOW - timedelta(seconds=600), JobState.SUCCEEDED, timeout_s=60)
    l4 = {CLASS_LABEL: "l4"}
    fleet = [
        VmStatus("a-1", "z", "RUNNING"),  # held by the late job
        VmStatus("a-2", "z", "RUNNING"),  # a draining worker's lease
        VmStatus("a-3", "z", "RUNNING"),  # nobody's
        VmStatus("b-1", "z", "RUNNING", labels=l4),  # its lease expired
        VmStatus("b-2", "z", "TERMINATED", labels=l4),
    ]
    vms = [
        lease_record("a-1", "late", NOW),
        lease_record("a-2", "drain:a-2", NOW),
        lease_record("b-1", "old", NOW - timedelta(seconds=3600)),
    ]
    rows = pool_gauges([queued, late, ended], vms, fleet, NOW)
    assert rows == [
        {
            "event": "pool_gauges",
            "gpu_class": "default",
            "queued": 1,
            "running_vms": 3,
            "unleased_running_vms": 1,
            "past_deadline": 1,
        },
        {
            "event": "pool_gauges",
            "gpu_class": "l4",
            "queued": 0,
            "running_vms": 1,
            "unleased_running_vms": 1,
            "past_deadline": 0,
        },
    ]
    # The deployment's classes decide a VM's class when given (the derived class, say).
    by_name = {vm.name: "t4" for vm in fleet}
    assert {r["gpu_class"] for r in pool_gauges([], vms, fleet, NOW, by_name)} == {"t4"}


def test_log_job_ended_prints_its_fields_as_top_level_json_keys(caplog):
    phases = JobPhases(claimed_at=_at(0), done_at=_at(3))
    job = make_job("j9", NOW, JobState.SUCCEEDED).model_copy(update={"phases": phases})
    with caplog.at_level(logging.INFO, logger="comfyburst.ops"):
        log_job_ended(job)
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert [(line["event"], line["logger"], line["severity"]) for line in lines] == [
        ("job_ended", "comfyburst.ops", "INFO"),
        ("job_phase", "comfyburst.ops", "INFO"),
    ]
    assert lines[0]["state"] == "succeeded" and lines[0]["job_id"] == "j9"
    assert (lines[1]["phase"], lines[1]["seconds"]) == ("run", 3.0)
