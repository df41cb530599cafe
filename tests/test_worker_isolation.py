"""Jobs that share a VM share nothing: ComfyUI's folders hold one job's files, only the outputs
pre-flight accepted run, and a name that leads to other model bytes makes ComfyUI drop its
caches. The whole agent in one process against the ComfyUI stand-in and a local model server."""

from __future__ import annotations

import io
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from comfyburst.domain.job_logs import job_log_object
from comfyburst.schema import DoneManifest, DoneStatus, ModelKind, ModelSpec, VmRef
from comfyburst_worker import prompt_scope
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


def _done(blobs: InMemoryBlobStore, job_id: str) -> DoneManifest:
    raw = blobs.read("signals", f"jobs/{job_id}/done.json")
    assert raw is not None, "no done.json"
    return DoneManifest.model_validate_json(raw)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _entries(tmp_path: Path) -> list[str]:
    return [str(p) for name in ("in", "out", "tmp") for p in (tmp_path / name).rglob("*")]


def test_the_next_job_finds_none_of_the_last_jobs_files(tmp_path, standin):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    first = put_job(
        store,
        blobs,
        config,
        make_request(
            invert_workflow("a/out", load_image="photo.png"), inputs={"photo.png": _png()}
        ),
        VM,
    )
    # B names A's input and A's output as ComfyUI would resolve them.
    stolen_input = invert_workflow("b/in", load_image=f"comfyburst/{first.job_id}/photo.png")
    stolen_output = invert_workflow("b/out", load_image="a/out_00001_.png [output]")
    second = put_job(store, blobs, config, make_request(stolen_input))
    third = put_job(store, blobs, config, make_request(stolen_output))
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(first.job_id)
    assert _done(blobs, first.job_id).status is DoneStatus.SUCCEEDED
    for job in (second, third):
        done = _done(blobs, job.job_id)
        assert done.status is DoneStatus.FAILED and done.error is not None
        assert done.error.type == "validation_error" and not done.outputs
    assert _entries(tmp_path) == []


def test_what_a_crashed_agent_left_is_removed_before_any_claim(tmp_path, standin):
    for name in ("in/comfyburst/old-job/photo.png", "out/old_00001_.png", "tmp/prev.png"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png())
    (tmp_path / "m" / "view" / "checkpoints").mkdir(parents=True)
    os.symlink(tmp_path / "out" / "old_00001_.png", tmp_path / "m" / "view" / "checkpoints" / "x")
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    make_agent(local_settings(standin, tmp_path / "m"), local_config(), store, blobs, VM).run(None)
    assert _entries(tmp_path) == []
    assert not any(p.is_symlink() for p in (tmp_path / "m" / "view").rglob("*"))


def test_only_the_accepted_outputs_run(tmp_path, standin):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    workflow = invert_workflow("kept/out")
    workflow["8"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    workflow["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["8", 0], "filename_prefix": "refused/out"},
    }
    job = put_job(store, blobs, config, make_request(workflow), VM)
    store.patch_job(job.job_id, {"accepted_outputs": ["3"]})
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = _done(blobs, job.job_id)
    assert done.status is DoneStatus.SUCCEEDED, done.error
    assert [o.name for o in done.outputs] == ["out_00001_.png"]
    assert blobs.list("outputs", f"jobs/{job.job_id}/outputs/") == [
        f"jobs/{job.job_id}/outputs/out_00001_.png"
    ]


def test_a_name_that_leads_to_other_bytes_makes_comfyui_drop_its_caches(tmp_path, standin):
    a_file, b_file = tmp_path / "a.bin", tmp_path / "b.bin"
    a_file.write_bytes(os.urandom(10_000))
    b_file.write_bytes(os.urandom(10_000))
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    with ModelServer({"/a": a_file, "/b": b_file}) as server:
        config = local_config(server.hostport)

        def spec(path: str) -> ModelSpec:
            return ModelSpec(kind=ModelKind.LORAS, filename="l.safetensors", url=server.url(path))

        paths = {}
        jobs = []
        for i, (path, vm) in enumerate([("/a", VM), ("/a", None), ("/b", None)]):
            request = make_request(invert_workflow(f"j{i}"), [spec(path)])
            jobs.append(put_job(store, blobs, config, request, vm))
            paths[jobs[-1].job_id] = path
        agent = make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM)
        frees: list[str] = []
        original = agent.s.comfy.free

        def free() -> None:
            frees.append(agent.s.view.root.joinpath("loras", "l.safetensors").resolve().name)
            original()

        agent.s.comfy.free = free  # type: ignore[method-assign]
        agent.run(jobs[0].job_id)
    assert all(_done(blobs, j.job_id).status is DoneStatus.SUCCEEDED for j in jobs)
    # The queued two run in either order: a free each time the name leads to other bytes.
    order = sorted(jobs, key=lambda j: store.jobs[j.job_id].started_at)
    sources = [paths[j.job_id] for j in order]
    expected = sum(1 for i, path in enumerate(sources) if i == 0 or path != sources[i - 1])
    assert expected in (2, 3) and len(frees) == expected


def test_a_fresh_agent_has_comfyui_drop_what_it_held_before_the_first_prompt(tmp_path, standin):
    # ComfyUI outlives a crashed agent: it may still hold the last job's models.
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    jobs = [put_job(store, blobs, config, make_request(invert_workflow("f0")), VM)]
    jobs.append(put_job(store, blobs, config, make_request(invert_workflow("f1"))))
    agent = make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM)
    frees: list[int] = []
    original = agent.s.comfy.free

    def free() -> None:
        frees.append(1)
        original()

    agent.s.comfy.free = free  # type: ignore[method-assign]
    agent.run(jobs[0].job_id)
    assert all(_done(blobs, j.job_id).status is DoneStatus.SUCCEEDED for j in jobs)
    assert frees == [1]  # once, before the first prompt; the model-free second needs none


def test_prune_keeps_accepted_outputs_and_their_ancestors_only():
    workflow = invert_workflow()
    workflow["8"] = {"class_type": "LoadImage", "inputs": {"image": "comfyburst/other/x.png"}}
    workflow["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}
    assert sorted(prompt_scope.prune(workflow, ["3"])) == ["1", "2", "3"]
    assert prompt_scope.prune(workflow, []) == workflow  # nothing recorded: ComfyUI decides
    assert prompt_scope.prune(workflow, ["77"]) == {}  # never fall back to the whole prompt
    assert prompt_scope.unaccepted(["3", "9"], ["3"]) == ["9"]
    assert prompt_scope.unaccepted(["3"], ["3"]) == []


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_cancel_and_deadline_stop_a_model_download_midway(tmp_path, standin, how):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * 1024 * 1024))
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    with ModelServer({"/big": src}) as server:
        server.stalled.add("/big")
        config = local_config(server.hostport)
        spec = ModelSpec(
            kind=ModelKind.CHECKPOINTS, filename="b.safetensors", url=server.url("/big")
        )
        job = put_job(store, blobs, config, make_request(invert_workflow(), [spec]), VM)
        if how == "deadline":
            soon = datetime.now(UTC) + timedelta(seconds=1.5)
            store.patch_job(job.job_id, {"deadline_at": soon})
        agent = make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM)
        if how == "cancel":
            timer = threading.Timer(0.5, store.patch_job, (job.job_id, {"cancel_requested": True}))
            timer.start()
        try:
            agent.run(job.job_id)
            stalled_still = not server.stall_ended.is_set()
        finally:
            server.release.set()
    done = _done(blobs, job.job_id)
    expected = DoneStatus.CANCELLED if how == "cancel" else DoneStatus.TIMED_OUT
    assert done.status is expected, done.error
    assert stalled_still  # the job ended while the server was still holding the download
    assert not list((tmp_path / "m" / "store" / "partial").iterdir())


def test_a_run_reporting_outputs_beyond_the_accepted_ones_fails_and_uploads_nothing(
    tmp_path, standin, monkeypatch
):
    # As if ComfyUI ran more than it was sent: the prompt goes out whole.
    monkeypatch.setattr(prompt_scope, "prune", lambda workflow, _accepted: workflow)
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    workflow = invert_workflow("kept/out")
    workflow["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "refused/out"},
    }
    job = put_job(store, blobs, config, make_request(workflow), VM)
    store.patch_job(job.job_id, {"accepted_outputs": ["3"]})
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = _done(blobs, job.job_id)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert "did not accept: 9" in done.error.message
    # Nothing but the job's log (what ComfyUI printed during the run).
    assert blobs.list("outputs", f"jobs/{job.job_id}/") == [job_log_object(job.job_id)]
    assert _entries(tmp_path) == []


def test_a_job_that_failed_before_reaching_comfyui_needs_no_wait_for_it(tmp_path):
    # ComfyUI is not up (yet): a model that fails to fetch must not make the agent wait for
    # ComfyUI to go idle, nor stop it from taking the next job.
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config("127.0.0.1:9")
    bad = ModelSpec(kind=ModelKind.LORAS, filename="x.safetensors", url="http://127.0.0.1:9/x")
    first = put_job(store, blobs, config, make_request(invert_workflow(), [bad]), VM)
    second = put_job(store, blobs, config, make_request(invert_workflow("two")))
    settings = local_settings(
        "http://127.0.0.1:9", tmp_path / "m", comfyui_idle_timeout_s=1, comfyui_ready_timeout_s=0.5
    )
    agent = make_agent(settings, config, store, blobs, VM)
    agent.s.cache.downloader.retries = 0
    agent.run(first.job_id)
    done = _done(blobs, first.job_id)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert done.error.type == "model_fetch"
    assert done.next_job_id == second.job_id and not agent.tainted
