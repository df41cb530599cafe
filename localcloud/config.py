"""What a local cloud is made of: ports, names, pool. Defaults are those of `make up`."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"

# Fixed ports of `make up` (0 = an ephemeral port, for tests).
DEFAULT_PORTS = {
    "firestore": 8081,
    "pubsub": 8085,
    "gcs": 4443,
    "compute": 8090,
    "api": 8080,
    "on_done_flag": 8091,
    "reaper": 8092,
    "on_result": 8093,
}

# functions/main.py targets and their signature types.
FUNCTION_TARGETS = {
    "api": "http",
    "on_done_flag": "cloudevent",
    "reaper": "http",
    "on_result": "cloudevent",
}

RESULTS_TOPIC = "comfyburst-results"
RESULTS_SUBSCRIPTION = "comfyburst-results-sub"
GCS_TOPIC = "comfyburst-gcs-notifications"
EVENTARC_SUBSCRIPTION = "comfyburst-eventarc-signals"
# Webhook delivery: a push subscription on the results topic to the on_result function, with
# the emulator applying its retry and dead-letter policies (as Pub/Sub does in the cloud).
WEBHOOKS_SUBSCRIPTION = "comfyburst-webhooks"
WEBHOOKS_DEAD_LETTER_TOPIC = "comfyburst-webhooks-dead-letter"
WEBHOOKS_DEAD_LETTER_SUBSCRIPTION = "comfyburst-webhooks-dead-letter-sub"


def default_guest_argv() -> list[str] | None:
    """The local VM image (ComfyUI stand-in + worker agent, see vm_guest.py), once the worker
    has an entry point; else VMs boot and run nothing."""
    try:
        found = importlib.util.find_spec("comfyburst_worker.__main__") is not None
    except ModuleNotFoundError:
        found = False
    return [sys.executable, "-m", "localcloud.vm_guest"] if found else None


@dataclass(frozen=True)
class LocalGpuClass:
    """A GPU class of the local cloud: one regional stand-in template per region of its zones
    (`COMFYBURST_GPU_CLASSES` as terraform renders it); the first class is the default."""

    name: str
    zones: tuple[str, ...]
    spot: bool = False
    price_per_hour: float = 0.0


@dataclass(frozen=True)
class RealComfyUI:
    """A real ComfyUI the VMs drive instead of the stand-in: a checkout the local cloud starts
    (`directory`, as `COMFYUI_DIR`), or one the user runs (`url`, as `COMFYUI_URL`). Either way
    its folders are under `root` (localcloud/real_comfyui.py lays them out)."""

    root: Path
    directory: Path | None = None
    url: str | None = None
    python: Path | None = None  # default: venv/ or .venv/ inside or beside the checkout
    # --cpu where no GPU is (`COMFYUI_ARGS` replaces it, e.g. with nothing on a GPU machine).
    extra_args: tuple[str, ...] = ("--cpu",)
    startup_timeout_s: float = 300.0


@dataclass(frozen=True)
class LocalCloudConfig:
    """Everything `LocalCloud` starts; all servers bind 127.0.0.1."""

    state_dir: Path = REPO_ROOT / ".localcloud"
    project_id: str = "comfyburst-local"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    pool_size: int = 2
    zones: tuple[str, ...] = ("us-central1-a", "us-central1-b")
    pool_label: str = "comfyburst-pool=local"
    bucket_prefix: str = "comfyburst-local"
    # None: no scheduler (tests that drive every step themselves call the reaper when they mean to).
    reaper_period_s: float | None = 3.0
    start_functions: bool = True
    start_compute: bool = True
    guest_argv: list[str] | None = field(default_factory=default_guest_argv)
    guest_env: dict[str, str] = field(default_factory=dict)
    # A pool of templates (as Terraform deploys it): no VMs at start, the dispatcher creates up
    # to `pool_size` from the stand-in's instance template; `spot` makes them Spot VMs.
    pool_template: bool = False
    spot: bool = False
    # GPU classes instead of the one pool template (each creates up to `pool_size` VMs).
    gpu_classes: tuple[LocalGpuClass, ...] = ()
    # With gpu_classes: the standard class a job moves to at the preemption cap.
    preemption_fallback_class: str | None = None
    compute_staging_s: float = 1.0
    compute_stopping_s: float = 0.5
    # Extra COMFYBURST_* settings for the functions and the worker (e.g. shorter timeouts).
    settings_env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 60.0
    # How long `stop` waits after SIGTERM before SIGKILL. A throwaway cloud (ephemeral ports:
    # tests, scenarios) keeps nothing, so it waits briefly; `make down` lets services finish.
    stop_grace_s: float = 10.0
    # The webhooks subscription's policies (the cloud's: 10 s to 600 s, 10 attempts). No retry
    # policy by default: with one, the Pub/Sub emulator (0.8.20) stops pushing after 3-4
    # attempts whenever two or more messages are being retried (measured with minimum/maximum
    # 1/10, 1/1, 1/2, 2/2 s and 2-4 failing messages: no further push nor dead-lettering for
    # 45-100 s; one message alone is retried with backoff and dead-lettered). Without one it
    # redelivers every ~1 s and dead-letters after the attempts, however many are failing.
    webhook_min_backoff_s: int | None = None
    webhook_max_backoff_s: int = 10
    webhook_max_delivery_attempts: int = 5
    webhook_ack_deadline_s: int = 30
    # A real ComfyUI for every VM (one at a time: they share its folders), else the stand-in.
    comfyui: RealComfyUI | None = None

    @classmethod
    def ephemeral(cls, state_dir: Path, **overrides: object) -> LocalCloudConfig:
        """Every port picked at start, so several sessions can run at once."""
        base = cls(state_dir=state_dir, ports=dict.fromkeys(DEFAULT_PORTS, 0), stop_grace_s=2.0)
        return replace(base, **overrides)  # type: ignore[arg-type]

    def bucket(self, role: str) -> str:
        return f"{self.bucket_prefix}-{role}"

    @property
    def buckets(self) -> dict[str, str]:
        return {role: self.bucket(role) for role in ("jobs", "outputs", "signals", "models")}

    @property
    def pool_label_pair(self) -> tuple[str, str]:
        key, _, value = self.pool_label.partition("=")
        return key, value

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"
