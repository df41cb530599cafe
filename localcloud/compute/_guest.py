"""A VM's guest: one child process in its own process group, logged like a serial console."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

# The host's identity: a real VM has none of these, and each would make google-auth (or the
# clients) take the project or credentials from the host instead of the metadata server.
_HOST_ONLY_ENV = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
)


class Guest:
    """A running guest command; reports its exit code once, whoever ended it."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        on_exit: Callable[[Guest, int], None],
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._reaped = False
        self.exited = threading.Event()
        self.exit_code: int | None = None
        with open(log_path, "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            log.write(f"--- localcloud compute: boot {stamp}: {list(argv)}\n".encode())
            log.flush()
            # Own session, so a stop reaches every process the guest started (as a VM
            # power-off would), not only the first one.
            self.process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.process.pid
        threading.Thread(target=self._watch, name=f"guest-{self.pid}", daemon=True).start()

    def _watch(self) -> None:
        # Observe the exit without reaping, so the group id cannot be reused before the
        # leftovers of the group are killed (a VM that halts takes all its processes along).
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        with self._lock:
            self._killpg(signal.SIGKILL)
            self.exit_code = self.process.wait()
            self._reaped = True
        try:
            # Before `exited`, so whoever waits in terminate() sees the exit fully recorded.
            self._on_exit(self, self.exit_code)
        finally:
            self.exited.set()

    def _killpg(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def terminate(self, grace_s: float) -> int | None:
        """SIGTERM the process group, SIGKILL after `grace_s`; wait for the exit."""
        with self._lock:
            if not self._reaped:
                self._killpg(signal.SIGTERM)
        if not self.exited.wait(grace_s):
            with self._lock:
                if not self._reaped:
                    self._killpg(signal.SIGKILL)
            self.exited.wait(10.0)
        return self.exit_code


def guest_env(
    base: Mapping[str, str] | None, extra: Mapping[str, str], metadata_host: str
) -> dict[str, str]:
    """The guest's env: base minus the host's identity, then extra, then the metadata address."""
    env = {k: v for k, v in (base or {}).items() if k not in _HOST_ONLY_ENV}
    env.update(extra)
    env["GCE_METADATA_HOST"] = metadata_host
    env["GCE_METADATA_IP"] = metadata_host
    return env
