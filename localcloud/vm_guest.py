"""What a local "GPU VM" boots, as the baked image's systemd units would: the ComfyUI stand-in
(or nothing, when COMFYUI_URL names a real ComfyUI), then the worker agent. The VM halts when
the agent ends.

Run by the Compute stand-in as `python -m localcloud.vm_guest`. The VM's boot disk is
`$LOCALCLOUD_VM_DISK_ROOT/{instance name}` (the name comes from the metadata server), so the
model cache survives stop/start as a real boot disk does. A `standin_faults.json` on the disk
arms ComfyUI stand-in faults for that boot. `COMFYBURST_WORKER_*` set by the caller win.
The guest leaves `standin_url` and `agent.pid` on the disk and logs "agent exited with N".
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import requests

FAULTS_FILE = "standin_faults.json"


def _instance_name() -> str:
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    url = f"http://{host}/computeMetadata/v1/instance/name"
    deadline = time.monotonic() + 30
    while True:
        try:
            response = requests.get(url, headers={"Metadata-Flavor": "Google"}, timeout=5)
            if response.status_code == 200:
                return response.text.strip()
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no instance name from the metadata server at {host}")
        time.sleep(0.1)  # the metadata server answers brief 503s; poll


def _disk(args: argparse.Namespace) -> Path:
    if args.vm_dir:
        return Path(args.vm_dir)
    root = Path(os.environ.get("LOCALCLOUD_VM_DISK_ROOT", ".localcloud/disks"))
    return root / _instance_name()


def _start_standin(disk: Path) -> tuple[subprocess.Popen[bytes], str]:
    comfy = disk / "comfyui"
    dirs = {name: comfy / name for name in ("input", "output", "temp")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    argv = [
        *(sys.executable, "-m", "localcloud.comfyui_standin", "--port", "0"),
        *("--input-dir", str(dirs["input"]), "--output-dir", str(dirs["output"])),
        *("--temp-dir", str(dirs["temp"])),
    ]
    faults = disk / FAULTS_FILE
    if faults.exists():
        argv += ["--faults-json", faults.read_text()]
    log_path = disk / "comfyui-standin.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("READY "):
                return process, line.split(" ", 1)[1].strip()
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the ComfyUI stand-in did not start; see {log_path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.vm_guest")
    parser.add_argument("--vm-dir", help="this VM's disk; default: from LOCALCLOUD_VM_DISK_ROOT")
    parser.add_argument("--comfyui-url", help="a real ComfyUI; default: $COMFYUI_URL or stand-in")
    args = parser.parse_args(argv)
    disk = _disk(args)
    disk.mkdir(parents=True, exist_ok=True)
    standin = None
    url = args.comfyui_url or os.environ.get("COMFYUI_URL")
    defaults = {
        # A local VM "powers off" by ending its guest; never run shutdown on this machine.
        "COMFYBURST_WORKER_POWEROFF_COMMAND": "exit",
    }
    if not url:
        standin, url = _start_standin(disk)
        defaults["COMFYBURST_WORKER_COMFYUI_MODELS_DIR"] = str(disk / "models")
        defaults["COMFYBURST_WORKER_COMFYUI_INPUT_DIR"] = str(disk / "comfyui" / "input")
    # With a real ComfyUI, its models folder comes from COMFYBURST_WORKER_COMFYUI_MODELS_DIR.
    defaults["COMFYBURST_WORKER_COMFYUI_URL"] = url
    env = {**defaults, **os.environ}
    worker = subprocess.Popen([sys.executable, "-m", "comfyburst_worker"], env=env)
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
