"""What a local "GPU VM" boots, as the baked image's systemd units would: the ComfyUI stand-in
(or nothing, when COMFYUI_URL names a real ComfyUI), then the worker agent. The VM halts when
the agent ends.

The stand-in and the agent start side by side (the agent waits for ComfyUI only when it
has a prompt to send, so its imports, clients and claim overlap the stand-in's start); the
stand-in listens on a port the guest picked, and if it dies the agent is stopped (the VM
halts, as a VM whose ComfyUI unit failed would be given up on). Only the standard library is
imported here: eight guests booting at once on a small machine pay for every import.

Run by the Compute stand-in as `python -m localcloud.vm_guest`. The VM's boot disk is
`$LOCALCLOUD_VM_DISK_ROOT/{instance name}` (the name comes from the metadata server), so the
model cache survives stop/start as a real boot disk does. A `standin_faults.json` on the disk
arms ComfyUI stand-in faults for that boot. `COMFYBURST_WORKER_*` set by the caller win.
The guest leaves `standin_url` and `agent.pid` on the disk and logs "agent exited with N".
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

FAULTS_FILE = "standin_faults.json"
# Boot delays, for benchmarks that model a real VM (unset: none). The guest's boot: power-on
# (this process) to the units starting, as the kernel and systemd take on a VM.
GUEST_BOOT_ENV = "LOCALCLOUD_GUEST_BOOT_S"
# ComfyUI's own start (Python, torch, CUDA, custom nodes) before it listens; the agent goes on
# meanwhile, as the image's two units do.
COMFYUI_START_ENV = "LOCALCLOUD_COMFYUI_START_S"
_DELAYED_STANDIN = (
    "import runpy, time; time.sleep({delay_s}); "
    "runpy.run_module('localcloud.comfyui_standin', run_name='__main__', alter_sys=True)"
)


def _instance_name() -> str:
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    deadline = time.monotonic() + 30
    while True:
        connection = http.client.HTTPConnection(host, timeout=5)
        try:
            connection.request(
                "GET", "/computeMetadata/v1/instance/name", headers={"Metadata-Flavor": "Google"}
            )
            response = connection.getresponse()
            if response.status == 200:
                return response.read().decode().strip()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise SystemExit(f"no instance name from the metadata server at {host}")
        time.sleep(0.1)  # the metadata server answers brief 503s; poll


def _disk(args: argparse.Namespace) -> Path:
    if args.vm_dir:
        return Path(args.vm_dir)
    root = Path(os.environ.get("LOCALCLOUD_VM_DISK_ROOT", ".localcloud/disks"))
    return root / _instance_name()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_standin(disk: Path, start_s: float = 0.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start the ComfyUI stand-in on a free port, listening after `start_s`; do not wait for
    it (the agent does)."""
    comfy = disk / "comfyui"
    dirs = {name: comfy / name for name in ("input", "output", "temp")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    argv = [
        *(sys.executable, "-m", "localcloud.comfyui_standin", "--port", str(port)),
        *("--input-dir", str(dirs["input"]), "--output-dir", str(dirs["output"])),
        *("--temp-dir", str(dirs["temp"])),
        # As the image's comfyui.service: the sampler's preview frames reach the worker.
        *("--preview-method", "auto"),
    ]
    faults = disk / FAULTS_FILE
    if faults.exists():
        argv += ["--faults-json", faults.read_text()]
    if start_s > 0:
        argv[1:3] = ["-c", _DELAYED_STANDIN.format(delay_s=start_s)]
    with open(disk / "comfyui-standin.log", "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return process, f"http://127.0.0.1:{port}"


def _stop_agent_if_standin_dies(
    standin: subprocess.Popen[bytes], worker: subprocess.Popen[bytes]
) -> None:
    """A stand-in that exits (e.g. its port was taken meanwhile) takes the agent down with it,
    so the VM halts and the reaper retries the job elsewhere instead of waiting for ComfyUI."""

    def watch() -> None:
        code = standin.wait()
        if worker.poll() is None:
            print(f"ComfyUI stand-in exited with {code}; stopping the agent", flush=True)
            worker.terminate()

    threading.Thread(target=watch, name="standin-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.vm_guest")
    parser.add_argument("--vm-dir", help="this VM's disk; default: from LOCALCLOUD_VM_DISK_ROOT")
    parser.add_argument("--comfyui-url", help="a real ComfyUI; default: $COMFYUI_URL or stand-in")
    args = parser.parse_args(argv)
    # Power-on: what the agent reports as the guest's boot (a real guest reads /proc/uptime).
    powered_on = time.time()
    boot_s = float(os.environ.get(GUEST_BOOT_ENV) or 0)
    if boot_s > 0:
        time.sleep(boot_s)
    disk = _disk(args)
    disk.mkdir(parents=True, exist_ok=True)
    standin = None
    url = args.comfyui_url or os.environ.get("COMFYUI_URL")
    defaults = {
        # A local VM "powers off" by ending its guest; never run shutdown on this machine.
        "COMFYBURST_WORKER_POWEROFF_COMMAND": "exit",
        "COMFYBURST_WORKER_GUEST_BOOTED_AT_EPOCH_S": f"{powered_on:.3f}",
    }
    if not url:
        standin, url = _start_standin(disk, float(os.environ.get(COMFYUI_START_ENV) or 0))
        defaults["COMFYBURST_WORKER_COMFYUI_MODELS_DIR"] = str(disk / "models")
        for folder in ("input", "output", "temp"):
            defaults[f"COMFYBURST_WORKER_COMFYUI_{folder.upper()}_DIR"] = str(
                disk / "comfyui" / folder
            )
    # The model store and the job model view live on the VM's disk, as on a real boot disk.
    defaults["COMFYBURST_WORKER_MODEL_CACHE_DIR"] = str(disk / "model-store")
    defaults["COMFYBURST_WORKER_JOB_MODELS_DIR"] = str(disk / "job-models")
    # With a real ComfyUI, its models folder comes from COMFYBURST_WORKER_COMFYUI_MODELS_DIR.
    defaults["COMFYBURST_WORKER_COMFYUI_URL"] = url
    env = {**defaults, **os.environ}
    worker = subprocess.Popen([sys.executable, "-m", "comfyburst_worker"], env=env)
    if standin is not None:
        _stop_agent_if_standin_dies(standin, worker)
    # For tests and chaos runs: where this boot's ComfyUI is, and which process is the agent.
    (disk / "standin_url").write_text(url)
    (disk / "agent.pid").write_text(str(worker.pid))

    def forward(signum: int, _frame: FrameType | None) -> None:
        worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = worker.wait()
    print(f"agent exited with {code}", flush=True)  # the VM's serial console
    if standin is not None:
        standin.terminate()
        try:
            standin.wait(timeout=10)
        except subprocess.TimeoutExpired:
            standin.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
