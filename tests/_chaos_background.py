"""The small chaos run of tests/test_chaos.py, in its own process beside the rest of the suite.

Its minutes are mostly spent waiting out faults (a VM hung in STAGING costs its job the boot
timeout, a preempted job its retry), not on the CPU, so conftest starts it as soon as the
session has collected the test, and the test (moved to the end of the run) waits for it and
checks the invariants. The run has its own local cloud on its own ports and its own process
environment (`running_cloud` exports the cloud's env into the process that runs it).

`python -m tests._chaos_background DIR` runs it and writes DIR/chaos.json (the report's JSON,
`meta` holding the result) and exits 0 when every target is met.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_FILE = "chaos.json"
LOG_FILE = "chaos.log"
# The whole run's deadline (its jobs' own deadlines are 240 s; the cloud's start and the
# checks come on top), and how long an interrupted run gets to stop its cloud.
RUN_DEADLINE_S = 600
STOP_GRACE_S = 30
JOBS = 24


def config(out_dir: Path):  # type: ignore[no-untyped-def]
    """Every fault kind at least once on a pool of up to 3 Spot VMs, 24 jobs."""
    from localcloud.scenarios.chaos import ChaosConfig

    return ChaosConfig(
        jobs=JOBS, vms=3, seed=11, fault_share=0.01, cancel_share=0.05, job_timeout_s=240,
        boot_timeout_s=30, state_dir=out_dir / "cloud", out=out_dir / RESULT_FILE,
    )  # fmt: skip


@dataclass
class Background:
    """A started run: its process and folder."""

    process: subprocess.Popen[bytes]
    out_dir: Path

    @classmethod
    def start(cls, out_dir: Path) -> Background:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / LOG_FILE, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests._chaos_background", str(out_dir)],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its cloud's processes go with its group
            )
        return cls(process, out_dir)

    def wait(self) -> int:
        """The run's exit code; past the deadline it is stopped and the wait fails."""
        try:
            return self.process.wait(timeout=RUN_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the chaos run took more than {RUN_DEADLINE_S} s") from None

    def log_tail(self, lines: int = 60) -> str:
        path = self.out_dir / LOG_FILE
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGINT (the run stops its cloud on KeyboardInterrupt), then SIGKILL the group."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def main(argv: list[str]) -> int:
    from localcloud.scenarios.chaos import report, run_chaos

    cfg = config(Path(argv[0]).resolve())
    try:
        result = run_chaos(cfg)
    except KeyboardInterrupt:
        return 130
    return 0 if report(result, cfg.out) else 1


# Where conftest keeps the started run for the test.
CHAOS_KEY = pytest.StashKey[Background]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
