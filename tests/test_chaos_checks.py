"""The chaos run's checker (issue #22 item 6): a job that ends `timed_out` is a failure of the
run unless an injected outage left no zone with capacity during its life; so is a hostile job
of tenant B that ends `timed_out` (it neither ran nor failed with a reason)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcloud.scenarios._chaos_checks import report, timed_out_figures
from localcloud.scenarios._chaos_faults import no_capacity_windows
from localcloud.scenarios._chaos_tenants import Tenants, hostile_requests, hung

ZONES = {"us-central1-a", "us-central1-b", "us-east4-a"}
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()


def at(offset_s: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset_s, tz=UTC)


def job(state: str, born_s: float, ended_s: float) -> dict[str, Any]:
    return {"state": state, "created_at": at(born_s), "finished_at": at(ended_s)}


def test_windows_are_the_times_every_zone_was_out() -> None:
    log = [
        (T0 + 10, frozenset({"us-central1-a", "us-central1-b"})),
        (T0 + 20, frozenset(ZONES)),
        (T0 + 30, frozenset({"us-east4-a"})),
        (T0 + 40, frozenset(ZONES)),
    ]
    windows = no_capacity_windows(log, ZONES, until=T0 + 50)
    assert windows == [(T0 + 20, T0 + 30), (T0 + 40, T0 + 50)]
    assert no_capacity_windows(log[:1], ZONES, until=T0 + 50) == []


def test_a_timed_out_job_no_fault_explains_is_counted() -> None:
    jobs = {
        "ok": job("succeeded", 0, 5),
        "stuck": job("timed_out", 0, 900),
        # Its life overlapped an outage of every zone: the faults explain it.
        "outage": job("timed_out", 100, 1000),
        # One stored with text timestamps (ISO) and no finished_at.
        "text": {"state": "timed_out", "created_at": at(0).isoformat(),
                 "state_changed_at": at(900).isoformat()},
    }  # fmt: skip
    figures = timed_out_figures(jobs, set(jobs), [(T0 + 950, T0 + 960)])
    assert figures["timed_out"] == 3
    assert figures["timed_out_unexplained"] == 2
    assert figures["timed_out_unexplained_ids"] == ["stuck", "text"]
    assert timed_out_figures(jobs, set(jobs), [(T0 - 10, T0 + 2000)])["timed_out_unexplained"] == 0


def _result(unexplained: int, hostile: dict[str, str] | None = None) -> dict[str, Any]:
    """A report's numbers that meet every target but `timed_out_unexplained` (and B's jobs)."""
    hostile = hostile or {}
    return {
        "jobs": 4, "vms": 2, "seed": 1, "jobs_lost": 0, "jobs_completed_twice": 0,
        "duplicate_results_different_content": 0, "vms_running_at_end": 0,
        "vms_unknown_to_firestore": 0, "attempts_beyond_faults": 0, "unaimed_vm_faults": 0,
        "terminal_jobs_without_result": 0, "cross_tenant_reads": 0, "models_changed": 0,
        "overhead_s_per_job": 1.0, "timed_out": unexplained,
        "timed_out_unexplained": unexplained, "timed_out_unexplained_ids": [],
        "states": {}, "injected": {}, "vms_created": 1, "vms_reused": 0, "vms_deleted": 0,
        "vms_with_pool_label": 1, "preemptions": 0, "jobs_preempted": 0,
        "preemptions_survived": 0, "zones": [], "hostile_jobs": hostile,
        "hostile_jobs_hung": hung(hostile),
        "cross_tenant_reads_tried": 0, "model_files_checked": 0, "gpu_s_billed": 0.0,
        "work_s": 0.0, "makespan_s": 1.0, "retried_jobs": 0, "result_messages": 4,
    }  # fmt: skip


def test_the_run_fails_on_an_unexplained_timed_out_job(tmp_path: Path) -> None:
    assert report(_result(0), tmp_path / "ok.json")
    assert not report(_result(1), tmp_path / "timed_out.json")


def test_a_hostile_job_that_timed_out_fails_the_run(tmp_path: Path) -> None:
    fine = {"colliding_model_name": "succeeded", "oversize_download": "failed",
            "annotated_output": "refused 422"}  # fmt: skip
    assert report(_result(0, fine), tmp_path / "fine.json")
    assert not report(_result(0, {**fine, "colliding_model_name": "timed_out"}), tmp_path / "t")
    # A wait that never ended is no better.
    assert not report(_result(0, {**fine, "gzip_download": "error TimeoutError"}), tmp_path / "e")


def test_hung_names_only_timed_out_and_unfinished_waits() -> None:
    outcomes = {"a": "succeeded", "b": "failed", "c": "refused 422", "d": "cancelled",
                "e": "timed_out", "f": "error TimeoutError"}  # fmt: skip
    assert hung(outcomes) == ["e", "f"]


def test_hostile_jobs_get_the_runs_own_deadline_which_covers_queueing() -> None:
    # B's first job queues behind every one of A's: at 240 s it timed out before a VM took it.
    tenants = Tenants(hostport="127.0.0.1:9", files={"/a": b"a", "/b": b"b", "/gz": b"g"})
    requests_ = hostile_requests(tenants, "a" * 32, {"1": {}}, 900)
    assert requests_ and all(r["options"] == {"timeout_s": 900} for r in requests_.values())
    assert requests_["colliding_model_name"]["models"][0]["filename"] == "chaos-a.safetensors"
