"""The warm path's overlaps (issue #26, item 6): what the worker does beside the output upload
still lands before the done flag. In-memory store and buckets, the ComfyUI stand-in."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from comfyburst.schema import DoneManifest, DoneStatus, JobError, ModelKind, VmRef
from comfyburst_worker.job_runner import RunResult
from comfyburst_worker.model_view import JobModelView
from comfyburst_worker.progress import ProgressWriter
from comfyburst_worker.workspace import ComfyFolders
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
# Generous: a write held for the upload is released within milliseconds when they overlap.
_HOLD_S = 30.0
# How long the last progress write waits for the flag: the run's join waits this out.
_LAST_HOLD_S = 1.0


class _Events:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, float]] = []
        self.output_written = threading.Event()
        self.flag_attempted = threading.Event()

    def add(self, what: str) -> None:
        with self.lock:
            self.log.append((what, time.monotonic()))


class _SlowProgressStore(InMemoryJobStore):
    """Each progress write waits (up to `_HOLD_S`) until an output object was written."""

    def __init__(self, events: _Events) -> None:
        super().__init__()
        self.events = events
        self.released: list[bool] = []

    def patch_job(self, job_id: str, fields: dict[str, object]) -> None:
        if "progress" in fields:
            self.released.append(self.events.output_written.wait(_HOLD_S))
            progress = fields["progress"]
            if isinstance(progress, dict) and progress.get("fraction") == 1.0:
                # The last write lingers until the flag is attempted (or _LAST_HOLD_S): only
                # the run's join on it keeps it ahead of the flag.
                self.events.flag_attempted.wait(_LAST_HOLD_S)
            super().patch_job(job_id, fields)
            self.events.add("progress written")
            return
        super().patch_job(job_id, fields)


class _RecordingBlobs(InMemoryBlobStore):
    def __init__(self, events: _Events) -> None:
        super().__init__()
        self.events = events

    def write(self, bucket: str, name: str, data: bytes, *args: Any, **kwargs: Any) -> int:
        generation = super().write(bucket, name, data, *args, **kwargs)
        if "/outputs/" in name:
            self.events.add("output written")
            self.events.output_written.set()
        elif name.endswith("/done.json"):
            self.events.add("done flag written")
            # After the flag is recorded: a progress write the code failed to join first
            # (released by this) is then recorded after it.
            self.events.flag_attempted.set()
        return generation


def test_last_progress_write_overlaps_the_upload_and_precedes_the_done_flag(tmp_path, standin):
    events = _Events()
    store, blobs = _SlowProgressStore(events), _RecordingBlobs(events)
    config = local_config()
    job = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    agent = make_agent(local_settings(standin, tmp_path / "models"), config, store, blobs, VM)

    agent.run(job.job_id)

    raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
    assert raw is not None
    assert DoneManifest.model_validate_json(raw).status is DoneStatus.SUCCEEDED
    # Every progress write went out while (or after) the outputs were stored, none waited
    # out its hold: the last one no longer blocks the upload.
    assert store.released and all(store.released)
    order = [what for what, _ in events.log]
    flag = order.index("done flag written")
    assert "progress written" in order[:flag]
    assert "progress written" not in order[flag:]  # none lands after the flag
    stored = store.get_job(job.job_id)
    assert stored is not None and stored.progress.fraction == 1.0


def test_progress_writer_closed_without_wait_writes_last_on_its_thread() -> None:
    written: list[int] = []
    gate = threading.Event()

    def write(value: int) -> None:
        gate.wait(_HOLD_S)
        written.append(value)

    writer: ProgressWriter[int] = ProgressWriter(write, 60.0)
    writer.close(7, wait=False)
    assert written == []  # close returned before the write was made
    gate.set()
    writer.join()
    assert written == [7]


def test_progress_writer_join_after_a_waiting_close_returns_at_once() -> None:
    written: list[int] = []
    writer: ProgressWriter[int] = ProgressWriter(written.append, 60.0)
    writer.close(3)
    assert written == [3]
    writer.join()
    assert written == [3]


class _EmptyQueue:
    """A live listen on the VM's class's queue that says it is empty (QueueSignal)."""

    def __init__(self) -> None:
        self.changed = threading.Event()
        self.queued: int | None = 0
        self.live = True

    def stop(self) -> None:
        self.live = False


def _order_after_one_job(
    tmp_path: Any, standin: str, queue: _EmptyQueue | None, fails: bool = False
) -> list[str]:
    """What happened after the agent's start, in order; `fails`: the run posted its prompt
    and failed (a run ComfyUI may still be finishing)."""
    events = _Events()
    store, blobs = InMemoryJobStore(), _RecordingBlobs(events)
    config = local_config()
    job = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    agent = make_agent(local_settings(standin, tmp_path / "models"), config, store, blobs, VM)
    agent.waiter.signal = queue
    if fails:
        runner = agent.runner

        def failed(*args: Any, **kwargs: Any) -> RunResult:
            runner.prompt_posted = True
            error = JobError(type="execution_error", message="the node raised")
            return RunResult(DoneStatus.FAILED, error=error)

        runner.run = failed  # type: ignore[method-assign]
    folders = agent.s.folders

    class _Recorded(ComfyFolders):
        def empty(self) -> int:
            removed = super().empty()
            events.add("folders emptied")
            return removed

    agent.s.folders = _Recorded(folders.input, folders.output, folders.temp)
    agent.run(job.job_id)
    order = [what for what, _ in events.log if what != "output written"]
    assert order[0] == "folders emptied"  # the agent's start
    return order[1:]


def test_with_a_live_empty_queue_the_flag_goes_before_the_folders_are_emptied(tmp_path, standin):
    assert _order_after_one_job(tmp_path, standin, _EmptyQueue()) == [
        "done flag written",
        "folders emptied",
    ]


def test_without_a_listen_the_folders_are_emptied_before_the_claim_and_the_flag(tmp_path, standin):
    assert _order_after_one_job(tmp_path, standin, None) == [
        "folders emptied",
        "done flag written",
    ]


def test_a_failed_run_is_waited_out_and_emptied_before_the_flag_even_with_a_live_listen(
    tmp_path, standin
):
    # Its wait for ComfyUI to go idle must not come out of the drain lease taken before the flag.
    assert _order_after_one_job(tmp_path, standin, _EmptyQueue(), fails=True) == [
        "folders emptied",
        "done flag written",
    ]


def test_clearing_the_model_view_keeps_its_empty_kind_folders(tmp_path, monkeypatch) -> None:
    view = JobModelView(tmp_path / "view")
    removed: list[str] = []
    rmtree = shutil.rmtree

    def recorded(path: Any, *args: Any, **kwargs: Any) -> None:
        removed.append(Path(path).name)
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", recorded)
    view.clear()
    assert removed == []  # nothing to empty: no folder removed and made again
    (tmp_path / "view" / "loras" / "x.safetensors").write_bytes(b"x")
    (tmp_path / "view" / "stray").mkdir()
    (tmp_path / "view" / "stray.txt").write_bytes(b"x")
    view.clear()
    assert sorted(removed) == ["loras", "stray"]
    kinds = sorted(kind.value for kind in ModelKind)
    assert sorted(p.name for p in (tmp_path / "view").iterdir()) == kinds
    assert not any((tmp_path / "view" / "loras").iterdir())
