"""Background services of the local cloud: spawn in their own process group, record, stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests


class StartupError(RuntimeError):
    """A service did not become ready; the message carries the end of its log."""


@dataclass
class Service:
    """One started process group."""

    name: str
    pid: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = field(default_factory=time.monotonic)
    ready_s: float | None = None  # seconds from spawn to ready, once known

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _pid_alive(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A port that was free a moment ago (for servers that cannot report the one they bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    name: str, argv: Sequence[str], env: Mapping[str, str], state_dir: Path, cwd: Path | None = None
) -> Service:
    """Start argv in a new session (its own process group), logging to state_dir/logs/NAME.log."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Service(name, process.pid, log_path, process)
    _record(state_dir, service, list(argv))
    return service


def _record(state_dir: Path, service: Service, argv: list[str]) -> None:
    pids = state_dir / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    record = {
        "name": service.name,
        "pid": service.pid,
        "argv": argv,
        "log": str(service.log_path),
        "started_ns": time.time_ns(),
    }
    (pids / f"{service.name}.json").write_text(json.dumps(record))


def recorded(state_dir: Path) -> list[Service]:
    """The services a previous `up` recorded in state_dir (alive or not), in start order."""
    records = [json.loads(path.read_text()) for path in (state_dir / "pids").glob("*.json")]
    records.sort(key=lambda record: record.get("started_ns", 0))
    return [Service(r["name"], r["pid"], Path(r["log"])) for r in records]


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # A zombie is dead for our purposes.
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (guests start their own sessions, so groups miss them)."""
    children = _children_map()
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _signal_tree(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_services(services: Sequence[Service], grace_s: float = 10.0) -> list[str]:
    """SIGTERM each group (and stray descendants), SIGKILL what is left; return leftovers."""
    trees = {s.name: [s.pid, *descendants(s.pid)] for s in services if s.alive()}
    for pids in trees.values():
        _signal_tree(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for service in services:
        pids = trees.get(service.name, [])
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            if service.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    service.process.wait(timeout=0.05)
            else:
                time.sleep(0.05)
        if any(_pid_alive(p) for p in pids):
            _signal_tree(pids + descendants(service.pid), signal.SIGKILL)
    leftovers = []
    for service in services:
        if service.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=5)
        pids = trees.get(service.name, [])
        # SIGKILL takes effect asynchronously; give the kernel a moment before judging.
        kill_deadline = time.monotonic() + 5.0
        while any(_pid_alive(p) for p in pids) and time.monotonic() < kill_deadline:
            time.sleep(0.05)
        if any(_pid_alive(p) for p in pids):
            leftovers.append(service.name)
    return leftovers


def wait_until(check: Callable[[], bool], service: Service, timeout_s: float, what: str) -> None:
    """Poll `check` until it is true; fail early with the log when the service died."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        if check():
            service.ready_s = time.monotonic() - service.started
            return
        if not service.alive():
            raise StartupError(f"{service.name} exited before {what}:\n{service.log_tail()}")
        if time.monotonic() > deadline:
            raise StartupError(
                f"{service.name}: no {what} after {timeout_s:.0f}s:\n{service.log_tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def http_ok(url: str, expect_status: int | None = 200) -> Callable[[], bool]:
    """A readiness check: GET url answers (with expect_status, or anything when None)."""

    def check() -> bool:
        try:
            response = requests.get(url, timeout=1.0)
        except requests.RequestException:
            return False
        return expect_status is None or response.status_code == expect_status

    return check


def log_line(service: Service, prefix: str) -> Callable[[], str | None]:
    """Finds the first log line starting with prefix (e.g. 'READY ')."""

    def find() -> str | None:
        try:
            text = service.log_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        return None

    return find
