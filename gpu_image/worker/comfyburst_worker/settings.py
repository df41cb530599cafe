"""Settings of the worker agent, read once in its entry point (environment, COMFYBURST_WORKER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """What the VM image (or the local cloud's guest) tells the agent; the rest is in metadata."""

    model_config = SettingsConfigDict(env_prefix="COMFYBURST_WORKER_", extra="ignore")

    comfyui_url: str = Field(
        default="http://127.0.0.1:8188", description="Where the local ComfyUI listens"
    )
    comfyui_models_dir: Path = Field(
        default=Path("/opt/comfyui/models"),
        description="ComfyUI's own models folder: the pre-baked models; never written",
    )
    comfyui_input_dir: Path = Field(
        default=Path("/opt/comfyui/input"),
        description="ComfyUI's input folder: holds one job's inputs; emptied between jobs",
    )
    comfyui_output_dir: Path = Field(
        default=Path("/opt/comfyui/output"),
        description="ComfyUI's output folder: emptied between jobs",
    )
    comfyui_temp_dir: Path = Field(
        default=Path("/opt/comfyui/temp"),
        description="ComfyUI's temp folder: emptied between jobs",
    )
    model_cache_dir: Path = Field(
        default=Path("/var/lib/comfyburst/models"),
        description="The content-addressed model store (no job-chosen names in it)",
    )
    job_models_dir: Path = Field(
        default=Path("/var/lib/comfyburst/job-models"),
        description="The running job's models under its names (ComfyUI's extra model path)",
    )
    max_model_bytes: int = Field(
        default=64 * 1024**3,
        ge=1,
        description="Most bytes one model download may read (when the job declares no size)",
    )
    comfyui_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="How long to wait for ComfyUI to finish a stopped run"
    )
    vm_name: str | None = Field(default=None, description="Override of the metadata's name")
    zone: str | None = Field(default=None, description="Override of the metadata's zone")
    heartbeat_interval_s: float | None = Field(
        default=None, gt=0, description="Default: the deployment config's"
    )
    job_poll_interval_s: float = Field(default=1.0, gt=0, description="Cancel watch period")
    progress_min_interval_s: float = Field(
        description="Least time between two progress writes to the job", default=1.0, ge=0
    )
    drain_poll_interval_s: float = Field(
        description="How often an idle worker looks for a queued job without a live queue listen",
        default=0.5,
        gt=0,
    )
    drain_listen: bool = Field(
        default=True,
        description="Listen to this class's queue (Firestore on_snapshot) while draining; off: "
        "poll only",
    )
    drain_listen_poll_interval_s: float = Field(
        description="How often an idle worker whose queue listen says the queue is empty looks "
        "anyway (a safety net; the listen wakes it at once for a new job)",
        default=5.0,
        gt=0,
    )
    comfyui_ready_timeout_s: float = Field(
        description="How long to wait for ComfyUI to answer at boot", default=300.0, gt=0
    )
    guest_booted_at_epoch_s: float | None = Field(
        default=None,
        description="The guest's boot time (Unix seconds); default: now minus /proc/uptime",
    )
    poweroff_command: str = Field(
        default="shutdown -h now", description="'exit' ends the agent process instead"
    )
    download_parallelism: int = Field(
        description="Parallel ranged GETs per model file", default=8, ge=1, le=64
    )
    download_chunk_bytes: int = Field(
        description="Bytes per ranged GET", default=8 * 1024 * 1024, ge=64 * 1024
    )
    download_min_parallel_bytes: int = Field(
        default=32 * 1024 * 1024, ge=0, description="Smaller files use one stream"
    )
    model_fetch_workers: int = Field(
        description="Model files fetched at once", default=4, ge=1, le=16
    )
    env_base_python: Path | None = Field(
        default=None,
        description="ComfyUI's venv interpreter that environment layers sit on; none: this VM "
        "fails build jobs",
    )
    env_layers_dir: Path = Field(
        default=Path("/var/lib/comfyburst/environments"),
        description="The worker's layers folder: archives, `cache/`, and `builds/` (writable by "
        "env_build_user), where build jobs build",
    )
    env_build_as: str = Field(
        default="", description="Command prefix running each build step as the build's own user"
    )
    env_build_user: str = Field(
        default="",
        description="The user env_build_as runs builds as (never ComfyUI's): every process of "
        "it is killed before and after each build, and a build is refused while one survives; "
        "required with env_build_as",
    )
    env_build_unisolated: bool = Field(
        default=False,
        description="Build without env_build_as, as the worker's own user (local cloud only)",
    )
    env_pip_command: str = Field(
        default="",
        description="The pip builds run as env_build_as's user (shlex argv; needs --python, pip "
        ">= 22.3); empty: this interpreter's `-m pip`",
    )
    env_pip_args: str = Field(
        default="", description="Extra pip arguments of builds (tests: a local find-links)"
    )
    env_comfyui_dir: Path | None = Field(
        default=None, description="ComfyUI's folder, importable while a layer's packs load"
    )
    env_layers_max_bytes: int = Field(
        default=50 * 1024**3,
        ge=1,
        description="Bytes of unpacked environment layers kept on disk (least recently used "
        "evicted; never the one ComfyUI runs)",
    )
    comfyui_layer_file: Path = Field(
        default=Path("/run/comfyburst/comfyui-layer.json"),
        description="The active layer file ComfyUI's start reads (JSON; absent: the base)",
    )
    comfyui_restart_command: str = Field(
        default="",
        description="Restarts ComfyUI (shlex argv), returning once the old process is gone; "
        "empty: this VM cannot switch environments",
    )
