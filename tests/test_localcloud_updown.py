"""`python -m localcloud up` then `down` leaves no process and no listening port."""

from __future__ import annotations

import subprocess
import sys
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
        assert {"firestore", "pubsub", "gcs", "compute"} <= {s.name for s in services}
        pids = {p for s in services for p in (s.pid, *_procs.descendants(s.pid))}
        ports = env_ports(env)
        assert ports <= listening_ports()
    finally:
        down = run_cli(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if _procs._pid_alive(p)]
    assert not ports & listening_ports()
    assert run_cli(tmp_path, "status").returncode == 3
