"""The worker stores what ComfyUI printed during a job beside the job's outputs: the whole agent
on the ComfyUI stand-in (in-memory store and buckets), and `store_job_log` failing softly."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
import requests

from comfyburst.domain.job_logs import job_log_object
from comfyburst.schema import DoneStatus, VmRef
from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.job_logs import local_now, store_job_log, stores_job_log
from comfyburst_worker.job_runner import RunResult
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import InMemoryBlobStore, InMemoryJobStore
from tests.test_worker_isolation import _done

VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
BUCKET = "outputs"


class _RefusingBlobStore(InMemoryBlobStore):
    def write(self, bucket: str, name: str, data: bytes, *args: object, **kwargs: object) -> int:
        raise OSError("storage is down")


def _log(blobs: InMemoryBlobStore, job_id: str) -> list[str]:
    data = blobs.read(BUCKET, job_log_object(job_id))
    assert data is not None, "no log stored"
    return data.decode().splitlines()


def test_each_job_gets_its_own_lines_beside_its_outputs(tmp_path, standin):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    agent = make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM)
    failing = put_job(store, blobs, config, make_request(invert_workflow("../../out")), VM)
    agent.run(failing.job_id)
    ok = put_job(store, blobs, config, make_request(invert_workflow("kept/out")), VM)
    agent.run(ok.job_id)
    assert _done(blobs, failing.job_id).status is DoneStatus.FAILED
    done = _done(blobs, ok.job_id)
    assert done.status is DoneStatus.SUCCEEDED
    failed_log, ok_log = _log(blobs, failing.job_id), _log(blobs, ok.job_id)
    assert failed_log[0] == "got prompt"
    assert any(line.startswith("!!! Exception during processing !!! ") for line in failed_log)
    assert ok_log[0] == "got prompt" and ok_log.count("got prompt") == 1
    assert ok_log[-1].startswith("Prompt executed in ")
    assert not any("Exception" in line or "Traceback" in line for line in ok_log)
    # Beside the outputs, never one of them.
    assert [o.name for o in done.outputs] == ["out_00001_.png"]
    assert blobs.list(BUCKET, f"jobs/{ok.job_id}/") == sorted(
        [f"jobs/{ok.job_id}/outputs/out_00001_.png", job_log_object(ok.job_id)]
    )
    assert blobs.objects[(BUCKET, job_log_object(ok.job_id))][1] == "text/plain; charset=utf-8"


def test_a_window_with_nothing_printed_stores_nothing(standin):
    blobs = InMemoryBlobStore()
    requests.post(f"{standin}/prompt", json={"prompt": {}}, timeout=10)  # prints `got prompt`
    later = local_now() + timedelta(seconds=1)
    assert store_job_log(ComfyClient(standin), blobs, BUCKET, "j", later) is False
    assert blobs.list(BUCKET, "") == []


@pytest.mark.parametrize("where", ["unreachable", "no such route", "storage down"])
def test_a_log_that_cannot_be_had_is_a_warning_not_a_failure(
    standin, where: str, caplog: pytest.LogCaptureFixture
):
    blobs = _RefusingBlobStore() if where == "storage down" else InMemoryBlobStore()
    base = {"unreachable": "http://127.0.0.1:9", "no such route": f"{standin}/api"}.get(
        where, standin
    )
    requests.post(f"{standin}/prompt", json={"prompt": {}}, timeout=10)
    since = datetime.now() - timedelta(minutes=1)
    with caplog.at_level(logging.WARNING, logger="comfyburst_worker.job_logs"):
        assert store_job_log(ComfyClient(base), blobs, BUCKET, "j", since) is False
    assert blobs.list(BUCKET, "") == []
    (record,) = [r for r in caplog.records if r.name == "comfyburst_worker.job_logs"]
    assert "ComfyUI's log not stored" in record.getMessage()


@pytest.mark.parametrize("status", [None, DoneStatus.CANCELLED])
def test_only_a_run_still_ours_stores_its_log(standin, status: DoneStatus | None):
    blobs = InMemoryBlobStore()
    config = SimpleNamespace(outputs_bucket=BUCKET)

    class Runner:
        s = SimpleNamespace(comfy=ComfyClient(standin), blobs=blobs, config=config)

        @stores_job_log
        def run(self, job: SimpleNamespace) -> RunResult:
            requests.post(f"{standin}/prompt", json={"prompt": {}}, timeout=10)
            return RunResult(status)

    assert Runner().run(SimpleNamespace(job_id="j")).status is status
    # None: the job is no longer ours (a lost lease); its next attempt writes the log.
    assert blobs.list(BUCKET, "") == ([] if status is None else [job_log_object("j")])


def test_comfyui_and_the_worker_run_in_utc_so_no_hour_of_their_log_repeats() -> None:
    """Log entries and the run's window are naive local times: in a zone with daylight saving
    the fall-back hour repeats, and another job's lines would fall in a later job's window."""
    from tests._image_units import unit_env as _env

    assert _env("comfyui.service")["TZ"] == "UTC"
    assert _env("comfyburst-worker.service")["TZ"] == "UTC"
