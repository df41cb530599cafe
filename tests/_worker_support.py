"""Builders shared by the worker tests and benchmarks: jobs, requests, an in-process agent."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from comfyburst.adapters.clock import SystemClock
from comfyburst.domain.jobs import new_job, transition
from comfyburst.ports import BlobStore, JobStore
from comfyburst.schema import (
    DeploymentConfig,
    InputImage,
    Job,
    JobOptions,
    JobRequest,
    Lease,
    ModelSpec,
    VmRecord,
    VmRef,
)
from comfyburst.states import JobState
from comfyburst_worker.__main__ import build_services
from comfyburst_worker.agent import Agent
from comfyburst_worker.settings import WorkerSettings


def invert_workflow(prefix: str = "cb/out", load_image: str | None = None) -> dict[str, Any]:
    """EmptyImage (or LoadImage) -> ImageInvert -> SaveImage."""
    source: dict[str, Any] = (
        {"class_type": "LoadImage", "inputs": {"image": load_image}}
        if load_image
        else {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255},
        }
    )
    return {
        "1": source,
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def make_request(
    workflow: dict[str, Any],
    models: list[ModelSpec] | None = None,
    inputs: dict[str, bytes] | None = None,
    timeout_s: int = 120,
) -> JobRequest:
    return JobRequest.model_validate(
        {
            "workflow": workflow,
            "models": [m.model_dump(mode="json") for m in models or []],
            "inputs": [
                InputImage(name=n, data_b64=base64.b64encode(d).decode()).model_dump()
                for n, d in (inputs or {}).items()
            ],
            "options": JobOptions(timeout_s=timeout_s).model_dump(mode="json"),
        }
    )


def put_job(
    store: JobStore,
    blobs: BlobStore,
    config: DeploymentConfig,
    request: JobRequest,
    vm: VmRef | None = None,
) -> Job:
    """A job as the API leaves it: request.json and inputs stored; `starting` on `vm` if given
    (with its lease), else `queued`."""
    clock = SystemClock()
    now = clock.now()
    job_id = uuid.uuid4().hex
    body = request.model_dump_json().encode()
    job = new_job(
        job_id=job_id,
        request=request,
        workflow_bytes=len(body),
        now=now,
        max_attempts=3,
        ttl_days=1,
    )
    blobs.write(config.jobs_bucket, f"jobs/{job_id}/request.json", body, "application/json")
    for item in request.inputs:
        blobs.write(config.jobs_bucket, f"jobs/{job_id}/inputs/{item.name}", item.decode())
    if vm is not None:
        job = transition(job, JobState.STARTING, now, vm=vm, dispatched_at=now)
        record, version = store.get_vm(vm.name)
        base = record or VmRecord(name=vm.name, zone=vm.zone)
        lease = Lease(job_id=job_id, expires_at=now + timedelta(seconds=config.lease_ttl_s))
        store.put_vm(base.model_copy(update={"lease": lease}), version)
    store.create_job(job)
    return job


def local_config(model_hostport: str | None = None, **overrides: Any) -> DeploymentConfig:
    values: dict[str, Any] = {
        "project_id": "comfyburst-test",
        "jobs_bucket": "jobs",
        "outputs_bucket": "outputs",
        "signals_bucket": "signals",
        "models_bucket": "models",
        "heartbeat_interval_s": 0.2,
        "drain_grace_s": 0.3,
        "http_model_hosts": [model_hostport] if model_hostport else [],
        **overrides,
    }
    return DeploymentConfig(**values)


def local_settings(comfyui_url: str, models_dir: Path, **overrides: Any) -> WorkerSettings:
    """Settings for an agent beside a stand-in whose folders are `in`, `out` and `tmp` next
    to `models_dir` (as the tests' stand-in fixtures make them); the model store and the job
    view go under `models_dir`."""
    base = models_dir.parent
    values: dict[str, Any] = {
        "comfyui_url": comfyui_url,
        "comfyui_models_dir": models_dir / "comfyui",
        "comfyui_input_dir": base / "in",
        "comfyui_output_dir": base / "out",
        "comfyui_temp_dir": base / "tmp",
        "model_cache_dir": models_dir / "store",
        "job_models_dir": models_dir / "view",
        "progress_min_interval_s": 0.05,
        "job_poll_interval_s": 0.05,
        "drain_poll_interval_s": 0.05,
        "comfyui_ready_timeout_s": 10,
        "poweroff_command": "exit",
        **overrides,
    }
    return WorkerSettings(**values)


def make_agent(
    settings: WorkerSettings,
    config: DeploymentConfig,
    store: JobStore,
    blobs: BlobStore,
    vm: VmRef,
) -> Agent:
    services = build_services(settings, config, vm, store, blobs, SystemClock())
    return Agent(services, vm)
