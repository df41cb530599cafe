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
The guest leaves `standin_url`, `agent.pid` and `standin.pid` on the disk and logs "agent
exited with N".

Environments: the stand-in reads the active layer file `comfyui-layer.json` on the disk at
each start (the agent writes it; a boot starts without one, as `/run` is empty at boot). The
agent's restart command (`COMFYBURST_WORKER_COMFYUI_RESTART_COMMAND`) sends the guest SIGHUP
and waits until the guest has stopped the stand-in and started a new one on the same port
(`standin_restarts` counts them); a restart is not a death, so the agent runs on.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

FAULTS_FILE = "standin_faults.json"
# The active layer file the worker writes and the stand-in reads at each start.
LAYER_FILE = "comfyui-layer.json"
# How many times this boot's stand-in was restarted (the restart command waits on it), and
# the running stand-in's process id (for tests and chaos runs).
RESTARTS_FILE = "standin_restarts"
STANDIN_PID_FILE = "standin.pid"
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


class _Standin:
    """The ComfyUI stand-in this VM runs, on one port for the whole boot. `restart()` (the
    guest's SIGHUP) stops it and starts a new one on the same port, reading the active layer
    file again, as `systemctl restart comfyui` does on a real VM; `watch` reports a death
    that was not a restart."""

    def __init__(self, disk: Path, start_s: float = 0.0) -> None:
        self.disk, self._start_s = disk, start_s
        comfy = disk / "comfyui"
        self._dirs = {name: comfy / name for name in ("input", "output", "temp")}
        for path in self._dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()  # one restart or stop at a time
        self._changed = threading.Condition()
        self._retired: list[subprocess.Popen[bytes]] = []  # stopped on purpose
        self._closed = self._broken = False
        self.restarts = 0
        _write_atomically(disk / RESTARTS_FILE, "0")
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the stand-in on this VM's port, listening after `start_s`; do not wait for
        it (the agent does)."""
        argv = [
            *(sys.executable, "-m", "localcloud.comfyui_standin", "--port", str(self.port)),
            *("--input-dir", str(self._dirs["input"])),
            *("--output-dir", str(self._dirs["output"])),
            *("--temp-dir", str(self._dirs["temp"])),
            # As the image's comfyui.service: the sampler's preview frames reach the worker.
            *("--preview-method", "auto"),
            *("--layer-file", str(self.disk / LAYER_FILE)),
        ]
        faults = self.disk / FAULTS_FILE
        if faults.exists():
            argv += ["--faults-json", faults.read_text()]
        if self._start_s > 0:
            argv[1:3] = ["-c", _DELAYED_STANDIN.format(delay_s=self._start_s)]
        # One log per boot; a restart's stand-in goes on in it.
        with open(self.disk / "comfyui-standin.log", "ab" if self.restarts else "wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        (self.disk / STANDIN_PID_FILE).write_text(str(process.pid))
        return process

    def restart(self) -> None:
        """Stop the running stand-in and start a new one; count it in `standin_restarts`."""
        with self._lock:
            if self._closed:
                return
            old = self.process
            with self._changed:
                self._retired.append(old)
            _stop(old)
            try:
                new = self._spawn()
            except Exception:
                with self._changed:
                    self._broken = True
                    self._changed.notify_all()
                raise
            with self._changed:
                self.process = new
                self.restarts += 1
                self._changed.notify_all()
            _write_atomically(self.disk / RESTARTS_FILE, str(self.restarts))
        print(f"ComfyUI stand-in restarted ({self.restarts})", flush=True)

    def stop(self) -> None:
        """Stop the stand-in for good (the VM halts)."""
        with self._lock:
            with self._changed:
                self._closed = True
                self._retired.append(self.process)
                self._changed.notify_all()
            _stop(self.process)

    def watch(self, on_death: Callable[[int | None], None]) -> None:
        """Call `on_death(exit code)` once a stand-in exits other than by `restart`/`stop`
        (or a restart could not start a new one)."""
        with self._changed:
            process = self.process
        while True:
            code = process.wait()
            with self._changed:
                if not any(p is process for p in self._retired):
                    break
                self._wait_past(process)
                if self._closed:
                    return
                if self._broken:
                    break
                process = self.process
        on_death(code)

    def _wait_past(self, old: subprocess.Popen[bytes]) -> None:
        """(Holding `_changed`) until `old` is replaced, or the stand-in is stopped or broken."""
        self._changed.wait_for(lambda: self.process is not old or self._closed or self._broken)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _restarts(disk: Path) -> int:
    try:
        return int((disk / RESTARTS_FILE).read_text() or 0)
    except FileNotFoundError:
        return 0


def _request_restart(disk: Path, guest_pid: int, timeout_s: float = 120.0) -> int:
    """The agent's restart command: SIGHUP the guest, then wait until it has stopped the old
    stand-in and started the new one (the agent then waits for ComfyUI to answer)."""
    before = _restarts(disk)
    os.kill(guest_pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while _restarts(disk) <= before:
        if time.monotonic() > deadline:
            print(f"the guest did not restart the stand-in in {timeout_s:.0f} s", file=sys.stderr)
            return 1
        try:
            os.kill(guest_pid, 0)
        except ProcessLookupError:
            print("the guest is gone; no stand-in to restart", file=sys.stderr)
            return 1
        time.sleep(0.05)  # the guest's restart takes a process stop and start; poll
    return 0


def _restart_command(disk: Path) -> str:
    """A command line that makes this guest restart its stand-in and waits for that. Run as
    a script in isolated mode: this module imports only the standard library."""
    argv = [sys.executable, "-I", str(Path(__file__).resolve())]
    return shlex.join([*argv, "--vm-dir", str(disk), "--restart-standin", str(os.getpid())])


def _stop_agent_if_standin_dies(standin: _Standin, worker: subprocess.Popen[bytes]) -> None:
    """A stand-in that exits (e.g. its port was taken meanwhile) takes the agent down with it,
    so the VM halts and the reaper retries the job elsewhere instead of waiting for ComfyUI.
    A deliberate restart is not a death."""

    def stop_agent(code: int | None) -> None:
        if worker.poll() is None:
            print(f"ComfyUI stand-in exited with {code}; stopping the agent", flush=True)
            worker.terminate()

    threading.Thread(
        target=standin.watch, args=(stop_agent,), name="standin-watch", daemon=True
    ).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.vm_guest")
    parser.add_argument("--vm-dir", help="this VM's disk; default: from LOCALCLOUD_VM_DISK_ROOT")
    parser.add_argument("--comfyui-url", help="a real ComfyUI; default: $COMFYUI_URL or stand-in")
    parser.add_argument(
        "--agent-command",
        help="the agent's command line (default: the ComfyBurst worker, python -m "
        "comfyburst_worker); the guest halts when it ends",
    )
    parser.add_argument(
        "--restart-standin",
        type=int,
        metavar="GUEST_PID",
        help="(the agent's restart command) make that guest restart its stand-in; wait for it",
    )
    args = parser.parse_args(argv)
    if args.restart_standin is not None:
        if not args.vm_dir:
            parser.error("--restart-standin needs --vm-dir")
        return _request_restart(Path(args.vm_dir), args.restart_standin)
    # Power-on: what the agent reports as the guest's boot (a real guest reads /proc/uptime).
    powered_on = time.time()
    boot_s = float(os.environ.get(GUEST_BOOT_ENV) or 0)
    if boot_s > 0:
        time.sleep(boot_s)
    disk = _disk(args)
    disk.mkdir(parents=True, exist_ok=True)
    # On a VM the layer file is under /run, empty at each boot: a boot starts in the base.
    (disk / LAYER_FILE).unlink(missing_ok=True)
    standin = None
    url = args.comfyui_url or os.environ.get("COMFYUI_URL")
    defaults = {
        # A local VM "powers off" by ending its guest; never run shutdown on this machine.
        "COMFYBURST_WORKER_POWEROFF_COMMAND": "exit",
        "COMFYBURST_WORKER_GUEST_BOOTED_AT_EPOCH_S": f"{powered_on:.3f}",
        # Environment layers and the active layer file live on the VM's disk.
        "COMFYBURST_WORKER_ENV_LAYERS_DIR": str(disk / "environments"),
        "COMFYBURST_WORKER_COMFYUI_LAYER_FILE": str(disk / LAYER_FILE),
    }
    if not url:
        standin = _Standin(disk, float(os.environ.get(COMFYUI_START_ENV) or 0))
        url = standin.url
        restart = standin.restart
        signal.signal(signal.SIGHUP, lambda _s, _f: _in_thread(restart, "standin-restart"))
        # Only the stand-in can be restarted by this guest; with a real ComfyUI there is no
        # restart command, so the agent refuses jobs in an environment.
        defaults["COMFYBURST_WORKER_COMFYUI_RESTART_COMMAND"] = _restart_command(disk)
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
    agent = shlex.split(args.agent_command or "") or [sys.executable, "-m", "comfyburst_worker"]
    worker = subprocess.Popen(agent, env=env)
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
        standin.stop()
    return code


def _in_thread(target: Callable[[], None], name: str) -> None:
    """Run `target` off the signal handler (a restart waits for processes)."""
    threading.Thread(target=target, name=name, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
