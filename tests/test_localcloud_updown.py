"""`python -m localcloud up` then `down` leaves no process and no listening port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from localcloud import _procs
from localcloud.cloud import read_env_file

pytestmark = pytest.mark.slow


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this machine, from /proc (IPv4 and IPv6)."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _started_at(proc: Path) -> float:
    """When a process started, in epoch seconds (/proc/PID/stat field 22, after the command)."""
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    ticks = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def listening_holders(ports: set[int]) -> dict[int, list[float]]:
    """For each of `ports` in LISTEN state, when each process holding it started."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == "0A" and port in ports:
                inodes[f"socket:[{fields[9]}]"] = port
    holders: dict[int, list[float]] = {port: [] for port in inodes.values()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
            started = _started_at(proc)
        except OSError:
            continue  # gone meanwhile, or not ours to read
        for link in links & inodes.keys():
            holders[inodes[link]].append(started)
    return holders


def env_ports(env: dict[str, str]) -> set[int]:
    ports = set()
    for name, value in env.items():
        if name.endswith(("_EMULATOR_HOST", "_URL", "_ENDPOINT")):
            parsed = urlparse(value if "://" in value else f"http://{value}")
            if parsed.port:
                ports.add(parsed.port)
    return ports


def run_cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "localcloud", "--state-dir", str(state_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.timeout(240)
def test_up_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    up = run_cli(tmp_path, "up", "--ephemeral")
    up_done = time.time()
    try:
        assert up.returncode == 0, up.stderr
        env = read_env_file(tmp_path / "env")
        assert "export FIRESTORE_EMULATOR_HOST=" in up.stdout
        for name in (
            "PUBSUB_EMULATOR_HOST",
            "STORAGE_EMULATOR_HOST",
            "COMFYBURST_PROJECT_ID",
            "COMFYBURST_RESULTS_SUBSCRIPTION",
            "COMFYBURST_COMPUTE_ENDPOINT",
        ):
            assert env.get(name), name
        status = run_cli(tmp_path, "status")
        assert status.returncode == 0, status.stdout
        services = _procs.recorded(tmp_path)
        # The scheduler too: `up` calls the reaper every period (conftest's cloud does not).
        assert {"firestore", "pubsub", "gcs", "compute", "reaper-timer"} <= {
            s.name for s in services
        }
        pids = {p for s in services for p in (s.pid, *_procs.descendants(s.pid))}
        ports = env_ports(env)
        assert ports <= listening_ports()
    finally:
        down = run_cli(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if _procs._pid_alive(p)]
    # A port of ours may be listening again, bound by another session's service (ports are
    # ephemeral, and `make test` runs two workers): that process started after ours let the
    # port go. One that started by the end of `up` is ours, left running.
    for port, started in listening_holders(ports).items():
        assert all(t > up_done for t in started), (port, started, up_done)
    assert run_cli(tmp_path, "status").returncode == 3
