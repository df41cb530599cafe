"""The local VM guest gives its agent a restart command: the guest then restarts the ComfyUI
stand-in on the same port, reading the active layer file again, without stopping the agent;
a stand-in that dies on its own afterwards still stops the agent (the VM halts). With a real
ComfyUI there is no restart command."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from tests._poll import poll_until

REPO = Path(__file__).resolve().parent.parent
HTTP_TIMEOUT_S = 10
# A stand-in agent: leaves its environment where the test reads it, then waits to be stopped
# (or, with "exit", ends at once).
AGENT = """
import json, os, signal, sys
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump(dict(os.environ), f)
os.replace(tmp, sys.argv[1])
if sys.argv[2] == "wait":
    signal.pause()
"""
PACK = """
class Hello:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return ("hello",)


NODE_CLASS_MAPPINGS = {"CbRestartHello": Hello}
"""


def _guest(tmp_path: Path, then: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMFYBURST_WORKER_", "LOCALCLOUD_")) and k != "COMFYUI_URL"
    }
    agent_env = tmp_path / "agent-env.json"
    agent = shlex.join([sys.executable, "-c", AGENT, str(agent_env), then])
    argv = [sys.executable, "-m", "localcloud.vm_guest", "--vm-dir", str(tmp_path / "vm")]
    with open(tmp_path / "guest.log", "wb") as log:
        guest = subprocess.Popen(
            [*argv, "--agent-command", agent, *extra],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return guest, agent_env


def _boot(url: str) -> dict[str, Any] | None:
    try:
        stats = requests.get(f"{url}/system_stats", timeout=HTTP_TIMEOUT_S).json()
    except requests.ConnectionError:
        return None
    return stats["system"]["standin_boot"]


def test_sighup_restarts_the_standin_on_its_port_with_the_new_layer(tmp_path: Path) -> None:
    guest, agent_env = _guest(tmp_path, "wait")
    disk = tmp_path / "vm"
    try:
        env = poll_until(lambda: agent_env.exists() and json.loads(agent_env.read_text()), "agent")
        layer_file = Path(env["COMFYBURST_WORKER_COMFYUI_LAYER_FILE"])
        assert layer_file == disk / "comfyui-layer.json"
        url = (disk / "standin_url").read_text()
        assert env["COMFYBURST_WORKER_COMFYUI_URL"] == url
        first = poll_until(lambda: _boot(url), "the stand-in to answer", timeout_s=60)
        assert first["environment_id"] is None  # no layer file: the base environment

        pack = tmp_path / "layer" / "custom_nodes" / "hello_pack"
        pack.mkdir(parents=True)
        (pack / "__init__.py").write_text(PACK)
        layer = {"environment_id": "env-r1", "custom_nodes": str(pack.parent)}
        layer_file.write_text(json.dumps({**layer, "site_packages": None}))
        command = shlex.split(env["COMFYBURST_WORKER_COMFYUI_RESTART_COMMAND"])
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

        second = poll_until(
            lambda: (b := _boot(url)) and b["boot_id"] != first["boot_id"] and b,
            "the restarted stand-in to answer on the same port",
            timeout_s=60,
        )
        assert second["environment_id"] == "env-r1"
        info = requests.get(f"{url}/object_info", timeout=HTTP_TIMEOUT_S).json()
        assert info["CbRestartHello"]["output"] == ["STRING"]
        assert guest.poll() is None, "the restart stopped the agent"
        assert "stopping the agent" not in (tmp_path / "guest.log").read_text()

        # A death that is not a restart still takes the agent (and the VM) down.
        os.kill(int((disk / "standin.pid").read_text()), signal.SIGKILL)
        guest.wait(timeout=60)
        log = (tmp_path / "guest.log").read_text()
        assert "stand-in exited with -9; stopping the agent" in log
        assert "agent exited with -15" in log
    finally:
        if guest.poll() is None:
            guest.terminate()
            guest.wait(timeout=30)


def test_with_a_real_comfyui_the_agent_gets_no_restart_command(tmp_path: Path) -> None:
    guest, agent_env = _guest(tmp_path, "exit", "--comfyui-url", "http://127.0.0.1:9")
    assert guest.wait(timeout=60) == 0
    env = json.loads(agent_env.read_text())
    assert env["COMFYBURST_WORKER_COMFYUI_URL"] == "http://127.0.0.1:9"
    assert "COMFYBURST_WORKER_COMFYUI_RESTART_COMMAND" not in env
    assert not (tmp_path / "vm" / "standin.pid").exists()
