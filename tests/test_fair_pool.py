"""Fair share on the whole local cloud (API, reaper, dispatcher, a VM and its draining worker):
a heavy caller queues six jobs on a class of ONE VM, then two light callers one job each. The
VM runs one job at a time, so when it looks for its next job nobody else runs anything: after
the heavy caller's first job it takes a light caller's (never served), and after that one the
other light caller's, although the heavy caller then runs nothing and its jobs are older: only
"served least recently" (domain/fair_share.py) puts it ahead; without it the tie went to the
oldest job, the heavy caller's (heavy, light, heavy, light, ...), and with the finished job
already `succeeded` at the claim, to the heavy caller every time. The `fifo` contrast is in
tests/test_fair_share.py and `make fair-pool` (localcloud/scenarios/fair_pool.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcloud.scenarios.fair_pool import HEAVY, FairPoolConfig, run_order, summarize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ONE_VM = FairPoolConfig(
    heavy_jobs=6, light_jobs=1, light_callers=2, busy_vms=1, two_classes=False, work_s=0.5
)


def test_light_callers_start_before_the_heavy_backlog_drains_on_one_vm(tmp_path: Path) -> None:
    jobs = run_order(ONE_VM, "fair", tmp_path / "cloud")
    summary = summarize(jobs)
    assert summary["all"]["lost"] == 0 and summary["all"]["failed"] == 0, jobs
    heavy_starts = sorted(j["started"] for j in jobs if j["caller"] == HEAVY)
    light = [j for j in jobs if j["caller"] != HEAVY]
    assert len(light) == 2 and all(j["started"] is not None for j in light)
    # One VM, starts one after another. The light jobs normally queue while the heavy caller's
    # first job runs and start right after it; on a slow machine they may arrive after its
    # second has started. Either way they run back to back, before the heavy caller's third:
    # without "served least recently" a heavy job comes between them (heavy, light, heavy,
    # light) or all of the heavy backlog before them.
    light_starts = sorted(j["started"] for j in light)
    between = [s for s in heavy_starts if light_starts[0] < s < light_starts[1]]
    assert not between, (heavy_starts, light)
    assert light_starts[1] < heavy_starts[2], (heavy_starts, light)
