"""Tenant B brings a model under tenant A's file name with other bytes, as the chaos run's
`colliding_model_name` attack does: after A's job on the same VM (same agent), or on a VM
started again over the same disk (a fresh agent, A's file still in the store), B's job runs at
once with B's own bytes under that name, and A's stored file stays A's.

The chaos runs' `timed_out` for that job came from its 240 s deadline passing while it was still
queued behind A's 500 jobs (a deadline covers queueing; the reaper's log says "passed in state
queued", and no worker ever claimed it), not from the worker: these tests pin the worker side."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from comfyburst.schema import DoneManifest, DoneStatus, ModelKind, ModelSpec, VmRef
from comfyburst_worker.agent import Agent
from tests._model_server import ModelServer
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
NAME = "chaos-a.safetensors"


def _done(blobs: InMemoryBlobStore, job_id: str) -> DoneManifest:
    raw = blobs.read("signals", f"jobs/{job_id}/done.json")
    assert raw is not None, "no done.json"
    return DoneManifest.model_validate_json(raw)


def _seen_at_free(agent: Agent, seen: list[bytes]) -> None:
    """Record the bytes the job's view shows under NAME whenever ComfyUI is told to drop its
    caches (right before the prompt that follows a change of those bytes)."""
    original = agent.s.comfy.free

    def free() -> None:
        link = agent.s.view.root / ModelKind.CHECKPOINTS.value / NAME
        seen.append(link.read_bytes() if link.exists() else b"")
        original()

    agent.s.comfy.free = free  # type: ignore[method-assign]


@pytest.mark.parametrize("vm", ["same agent", "fresh agent, same disk"])
def test_b_runs_at_once_with_its_own_bytes_under_as_name(tmp_path: Path, standin, vm) -> None:
    a_bytes, b_bytes = os.urandom(256 * 1024), os.urandom(256 * 1024)
    (tmp_path / "a.bin").write_bytes(a_bytes)
    (tmp_path / "b.bin").write_bytes(b_bytes)
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    with ModelServer({"/a": tmp_path / "a.bin", "/b": tmp_path / "b.bin"}) as server:
        config = local_config(server.hostport)
        settings = local_settings(standin, tmp_path / "m")
        # A declares its hash and size; B (as in the chaos run) declares neither.
        a_spec = ModelSpec(
            kind=ModelKind.CHECKPOINTS,
            filename=NAME,
            url=server.url("/a"),
            sha256=hashlib.sha256(a_bytes).hexdigest(),
            size_bytes=len(a_bytes),
        )
        b_spec = ModelSpec(kind=ModelKind.CHECKPOINTS, filename=NAME, url=server.url("/b"))
        a_job = put_job(store, blobs, config, make_request(invert_workflow("a"), [a_spec]), VM)
        seen: list[bytes] = []
        began = time.monotonic()
        if vm == "same agent":
            b_job = put_job(store, blobs, config, make_request(invert_workflow("b"), [b_spec]))
            agent = make_agent(settings, config, store, blobs, VM)
            _seen_at_free(agent, seen)
            agent.run(a_job.job_id)
        else:
            first = make_agent(settings, config, store, blobs, VM)
            _seen_at_free(first, seen)
            first.run(a_job.job_id)
            b_job = put_job(store, blobs, config, make_request(invert_workflow("b"), [b_spec]), VM)
            second = make_agent(settings, config, store, blobs, VM)
            _seen_at_free(second, seen)
            second.run(b_job.job_id)
        took = time.monotonic() - began
    a_done, b_done = _done(blobs, a_job.job_id), _done(blobs, b_job.job_id)
    assert a_done.status is DoneStatus.SUCCEEDED, a_done.error
    assert b_done.status is DoneStatus.SUCCEEDED, b_done.error
    assert b_done.outputs and b_done.timings.model_downloads == 1
    # ComfyUI was told to drop what it held before each prompt whose NAME led to new bytes,
    # and each time the view showed that job's own bytes.
    assert seen == [a_bytes, b_bytes]
    # A's stored file is A's; B's is B's, under its own hash.
    cache = settings.model_cache_dir / "sha256"
    assert (cache / hashlib.sha256(a_bytes).hexdigest()).read_bytes() == a_bytes
    assert (cache / hashlib.sha256(b_bytes).hexdigest()).read_bytes() == b_bytes
    # Far inside any deadline: nothing waits on A's download, lock or name.
    assert took < 60, took
