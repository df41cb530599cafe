"""Entry point: `python -m comfyburst_worker` / `comfyburst-worker` (started by systemd)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import uuid

from comfyburst.ports import BlobStore, Clock, JobStore
from comfyburst.schema import DeploymentConfig, VmRef
from comfyburst_worker._download import HttpDownloader
from comfyburst_worker._drain_wait import QueueSignal
from comfyburst_worker._hosts import HostPolicy
from comfyburst_worker._secrets import CIVITAI_HOST, HUGGINGFACE_HOST, load_auth_headers
from comfyburst_worker.agent import Agent, poweroff
from comfyburst_worker.claims import LeaseKeeper, boot_lease
from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.comfy_env import ComfyEnv
from comfyburst_worker.env_layers import LayerCache
from comfyburst_worker.job_runner import Services
from comfyburst_worker.metadata import MetadataClient
from comfyburst_worker.model_cache import ModelCache
from comfyburst_worker.model_view import JobModelView
from comfyburst_worker.phases import ComfyReadyProbe, PhaseLog, guest_booted_at, wall_of
from comfyburst_worker.preemption import PreemptionWatch
from comfyburst_worker.settings import WorkerSettings
from comfyburst_worker.workspace import ComfyFolders
from comfyburst_worker.ws_follower import WsFollower

log = logging.getLogger("comfyburst_worker")


def build_services(
    settings: WorkerSettings,
    config: DeploymentConfig,
    vm: VmRef,
    store: JobStore,
    blobs: BlobStore,
    clock: Clock,
    auth_headers: dict[str, str] | None = None,
) -> Services:
    """Everything a job run needs, from settings and already-built adapters."""
    policy = HostPolicy(
        https_hosts=tuple(config.model_hosts),
        http_hostports=tuple(h.lower() for h in config.http_model_hosts),
        redirect_hosts=tuple(config.model_redirect_hosts),
        auth_headers=auth_headers or {},
        token_scopes={
            CIVITAI_HOST: tuple(config.civitai_token_scope),
            HUGGINGFACE_HOST: tuple(config.huggingface_token_scope),
        },
    )
    downloader = HttpDownloader(
        policy,
        parallelism=settings.download_parallelism,
        chunk_bytes=settings.download_chunk_bytes,
        min_parallel_bytes=settings.download_min_parallel_bytes,
    )
    cache = ModelCache(
        settings.model_cache_dir,
        downloader,
        blobs,
        config.models_bucket,
        config.gs_model_buckets,
        max_model_bytes=settings.max_model_bytes,
    )
    comfy = ComfyClient(settings.comfyui_url)
    follower = WsFollower(comfy, f"comfyburst-{vm.name}-{uuid.uuid4().hex[:8]}")
    leases = LeaseKeeper(store, vm, clock, config.lease_ttl_s)
    view = JobModelView(settings.job_models_dir)
    folders = ComfyFolders(
        settings.comfyui_input_dir, settings.comfyui_output_dir, settings.comfyui_temp_dir
    )
    # Beside the build jobs' folder (written as the build user): these only by the worker.
    layers = LayerCache(
        settings.env_layers_dir / "cache",
        blobs,
        config.models_bucket,
        settings.env_layers_max_bytes,
    )
    env = ComfyEnv.of_settings(settings, layers, comfy)
    return Services(
        settings, config, store, blobs, clock, comfy, follower, cache, leases, view, folders, env
    )


def _cloud_adapters(config: DeploymentConfig) -> tuple[JobStore, BlobStore, Clock]:
    from google.cloud import firestore, storage  # type: ignore[attr-defined,unused-ignore]

    from comfyburst.adapters.clock import SystemClock
    from comfyburst.adapters.firestore_store import Collections, FirestoreJobStore
    from comfyburst.adapters.gcs import GcsBlobStore

    collections = Collections(config.jobs_collection, config.vms_collection)
    store = FirestoreJobStore(firestore.Client(project=config.project_id), collections)
    blobs = GcsBlobStore(storage.Client(project=config.project_id))
    return store, blobs, SystemClock()


def _queue_watch(config: DeploymentConfig, gpu_class: str) -> QueueSignal:
    """The listen on this VM's class's queue that wakes the draining agent (started now, so
    it is answering by the time the first job ends)."""
    from google.cloud import firestore  # type: ignore[attr-defined,unused-ignore]

    from comfyburst.adapters.firestore_queue_watch import FirestoreQueueWatch

    client = firestore.Client(project=config.project_id)
    return FirestoreQueueWatch(client, config.jobs_collection, gpu_class).start()


def main(argv: list[str] | None = None) -> int:
    booted_at = time.monotonic()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = WorkerSettings()
    code = 0
    from comfyburst.adapters.clock import SystemClock

    # ComfyUI boots beside the agent (its own unit): probe it from now, so its first answer
    # is timed while the claim and the model fetch go on.
    probe = ComfyReadyProbe(
        settings.comfyui_url, SystemClock(), settings.comfyui_ready_timeout_s
    ).start()
    try:
        metadata = MetadataClient()
        config = metadata.deployment_config()
        vm = VmRef(
            name=settings.vm_name or metadata.instance_name(),
            zone=settings.zone or metadata.zone(),
        )
        store, blobs, clock = _cloud_adapters(config)
        # The job comes from this VM's lease, committed with the job before the start.
        lease = boot_lease(store, vm, clock.now())
        boot_job = lease.job_id
        log.info("agent on %s/%s; boot job %s", vm.zone, vm.name, boot_job or "-")
        auth = load_auth_headers(config)
        services = build_services(settings, config, vm, store, blobs, clock, auth)
        preemption = PreemptionWatch(
            metadata.host, store, clock, vm.name, fallback_class=config.preemption_fallback_class
        ).start()
        signal.signal(signal.SIGTERM, preemption.on_shutdown_signal)
        now = clock.now()
        phases = PhaseLog(
            clock,
            wall_of(booted_at, now),
            guest_booted_at(now, settings.guest_booted_at_epoch_s),
            probe,
        )
        gpu_class = metadata.gpu_class()
        queue = (
            _queue_watch(config, gpu_class or config.default_gpu_class)
            if settings.drain_listen
            else None
        )
        agent = Agent(services, vm, booted_at, preemption, phases, gpu_class, queue)
        # Stopped (the reaper's warm stop) or preempted while held warm: the stretch so far.
        preemption.shutdown_hooks.append(agent.end_warm_now)
        agent.run(boot_job, started_for_warm=lease.drain_marker)
        log.info("no more work; powering off (%s)", settings.poweroff_command)
    except Exception:
        # Powering off beats a restart loop: systemd would bring the agent back into the
        # same failure, and the VM would bill until the reaper stopped it.
        log.exception("the agent failed; powering off (%s)", settings.poweroff_command)
        code = 1
    finally:
        probe.stop()
        poweroff(settings.poweroff_command, lambda cmd: subprocess.run(cmd, check=False))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
