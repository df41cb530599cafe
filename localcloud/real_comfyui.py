"""A real ComfyUI for the local cloud's VMs: the folders it shares with their workers, laid
out as the GPU image lays out its own, and the ComfyUI started on them from a checkout
(`COMFYUI_DIR`) or, for one the user runs (`COMFYUI_URL`), exactly what to start it with.

The image's ComfyUI reads the running job's models from an extra model path
(gpu_image/scripts/06-model-cache.sh) and the worker empties ComfyUI's input, output and temp
folders between jobs: on one machine, the worker's five COMFYBURST_WORKER_*_DIR settings must
name the folders this ComfyUI was started with. Every VM gets them (they win over vm_guest's
defaults), so the VMs share the one ComfyUI: one job at a time (`make demo`'s one job).
"""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

import requests

from comfyburst.schema import ModelKind
from localcloud import _procs
from localcloud.config import RealComfyUI


def layout(comfyui: RealComfyUI) -> dict[str, Path]:
    """The folders ComfyUI is started with and the worker's settings name."""
    root = comfyui.root.resolve()
    models = comfyui.directory.resolve() / "models" if comfyui.directory else root / "models"
    return {
        "input": root / "input",
        "output": root / "output",
        "temp_parent": root,  # ComfyUI keeps its temp files in `temp` under --temp-directory
        "temp": root / "temp",
        "user": root / "user",
        "job_models": root / "job-models",
        "models": models,  # ComfyUI's own (pre-baked) models: the worker never writes there
        "extra_model_paths": root / "extra_model_paths.yaml",
    }


def extra_model_paths_yaml(job_models: Path) -> str:
    """The running job's models, searched first: one folder per kind a job brings (as the
    image's file)."""
    lines = ["comfyburst:", f"  base_path: {job_models}", "  is_default: true"]
    lines += [f"  {kind.value}: {kind.value}/" for kind in ModelKind]
    return "\n".join(lines) + "\n"


def guest_env(comfyui: RealComfyUI, url: str) -> dict[str, str]:
    """What each VM's worker needs to drive this ComfyUI."""
    folders = layout(comfyui)
    return {
        "COMFYUI_URL": url,
        "COMFYBURST_WORKER_COMFYUI_MODELS_DIR": str(folders["models"]),
        "COMFYBURST_WORKER_COMFYUI_INPUT_DIR": str(folders["input"]),
        "COMFYBURST_WORKER_COMFYUI_OUTPUT_DIR": str(folders["output"]),
        "COMFYBURST_WORKER_COMFYUI_TEMP_DIR": str(folders["temp"]),
        "COMFYBURST_WORKER_JOB_MODELS_DIR": str(folders["job_models"]),
    }


def folder_flags(comfyui: RealComfyUI) -> dict[str, str]:
    """ComfyUI's command-line flags for the shared folders."""
    folders = layout(comfyui)
    return {
        "--input-directory": str(folders["input"]),
        "--output-directory": str(folders["output"]),
        "--temp-directory": str(folders["temp_parent"]),
        "--extra-model-paths-config": str(folders["extra_model_paths"]),
    }


def argv(comfyui: RealComfyUI, python: Path, port: int) -> list[str]:
    """How the local cloud starts a checkout's ComfyUI: loopback, the shared folders."""
    folders = layout(comfyui)
    flags = [part for pair in folder_flags(comfyui).items() for part in pair]
    return [
        *(str(python), "main.py", "--listen", "127.0.0.1", "--port", str(port)),
        *("--disable-auto-launch", *flags, "--user-directory", str(folders["user"])),
        *comfyui.extra_args,
    ]


def python_of(directory: Path) -> Path | None:
    """The Python of a ComfyUI checkout: a venv inside it or beside it."""
    for candidate in (directory / "venv", directory / ".venv", directory.parent / "venv"):
        if (candidate / "bin" / "python").exists():
            return candidate / "bin" / "python"
    return None


def from_env(root: Path, env: Mapping[str, str] | None = None) -> RealComfyUI | None:
    """COMFYUI_DIR (a checkout to start; COMFYUI_PYTHON, COMFYUI_ARGS) or COMFYUI_URL (a
    ComfyUI the user runs), with the shared folders under `root`; None: the stand-in."""
    env = os.environ if env is None else env
    if env.get("COMFYUI_DIR"):
        python = Path(env["COMFYUI_PYTHON"]) if env.get("COMFYUI_PYTHON") else None
        args = tuple(shlex.split(env["COMFYUI_ARGS"])) if "COMFYUI_ARGS" in env else ("--cpu",)
        return RealComfyUI(root, Path(env["COMFYUI_DIR"]), python=python, extra_args=args)
    if env.get("COMFYUI_URL"):
        return RealComfyUI(root, url=env["COMFYUI_URL"].rstrip("/"))
    return None


def prepare(comfyui: RealComfyUI, state_dir: Path) -> tuple[_procs.Service | None, dict[str, str]]:
    """Lay out the shared folders; start the checkout's ComfyUI on them (not waiting for it).
    The started service (None for a ComfyUI at `url`) and the VMs' environment."""
    folders = layout(comfyui)
    for name in ("input", "output", "temp", "user"):
        folders[name].mkdir(parents=True, exist_ok=True)
    for kind in ModelKind:
        (folders["job_models"] / kind.value).mkdir(parents=True, exist_ok=True)
    folders["extra_model_paths"].write_text(extra_model_paths_yaml(folders["job_models"]))
    if comfyui.directory is None:
        return None, guest_env(comfyui, str(comfyui.url))
    python = comfyui.python or python_of(comfyui.directory)
    if python is None or not (comfyui.directory / "main.py").exists():
        raise _procs.StartupError(
            f"no ComfyUI to start in {comfyui.directory}: it needs main.py and a venv/ "
            "(or set COMFYUI_PYTHON to the Python that has ComfyUI's requirements)"
        )
    port = _procs.free_port()
    # Not the cloud's settings: the image's ComfyUI knows nothing of ComfyBurst.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYBURST_")}
    command = argv(comfyui, python, port)
    service = _procs.spawn("comfyui", command, env, state_dir, cwd=comfyui.directory)
    return service, guest_env(comfyui, f"http://127.0.0.1:{port}")


def wait_ready(comfyui: RealComfyUI, service: _procs.Service, url: str) -> None:
    """Until ComfyUI answers; its log's end when it exits or takes too long."""
    check = _procs.http_ok(f"{url}/system_stats")
    _procs.wait_until(check, service, comfyui.startup_timeout_s, "/system_stats")


def advice_for(comfyui: RealComfyUI) -> str | None:
    """For a ComfyUI the user runs: what to restart it with when its command line (GET
    /system_stats) does not name the shared folders; None when it does."""
    wanted = folder_flags(comfyui)
    try:
        answer = requests.get(f"{comfyui.url}/system_stats", timeout=10).json()
        given_argv = list(answer["system"]["argv"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        given_argv = []
    given = dict(itertools.pairwise(given_argv))
    if all(given.get(flag) == value for flag, value in wanted.items()):
        return None
    flags = " ".join(f"{flag} {shlex.quote(value)}" for flag, value in wanted.items())
    return (
        f"The ComfyUI at {comfyui.url} must use the folders the VMs' workers use. Restart it "
        f"with\n  python main.py {flags}\nor set COMFYUI_DIR to its checkout instead of "
        "COMFYUI_URL: the local cloud then starts it itself."
    )
