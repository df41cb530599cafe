"""The chaos run's pinning stockout (issue #22 item 6), on the Compute stand-in: the region
holding most of the pool's VMs runs out and stays out while any of them sits there; the moving
outage never takes the last zones with capacity meanwhile."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from localcloud.compute import ComputeStandin, ComputeStandinConfig
from localcloud.scenarios._chaos_faults import Injector

pytestmark = pytest.mark.emulator  # a Compute stand-in on loopback, as its own tests are

US_A, US_B, EAST = "us-central1-a", "us-central1-b", "us-east4-a"
ZONES = [US_A, US_B, EAST]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[ComputeStandin]:
    config = ComputeStandinConfig(zones=ZONES, guest=None, log_dir=tmp_path / "logs")
    running = ComputeStandin(config)
    running.start()
    yield running
    running.stop()


def _injector(standin: ComputeStandin, tmp_path: Path, seed: int = 1) -> Injector:
    env = {
        "COMFYBURST_COMPUTE_ENDPOINT": standin.base_url,
        "COMFYBURST_PROJECT_ID": "comfyburst-local",
        "COMFYBURST_SIGNALS_BUCKET": "signals",
        "COMFYBURST_ON_DONE_FLAG_URL": "http://127.0.0.1:9/unused",
        "COMFYBURST_API_URL": "http://127.0.0.1:9/unused",
    }
    return Injector(env, tmp_path, random.Random(seed))


def _out(standin: ComputeStandin) -> set[str]:
    response = requests.get(f"{standin.base_url}/_standin/capacity", timeout=10)
    limits = response.json()["zone_capacity_vms"]
    return {zone for zone, limit in limits.items() if limit == 0}


def test_the_pinning_stockout_holds_the_pools_region_until_the_pool_left(
    standin: ComputeStandin, tmp_path: Path
) -> None:
    injector = _injector(standin, tmp_path)
    assert injector.pinning_stockout(ZONES, []) is None  # no pool yet: tried again later
    pool = [{"name": "a", "zone": US_A}, {"name": "b", "zone": US_B}, {"name": "e", "zone": EAST}]
    pinned = injector.pinning_stockout(ZONES, pool)
    assert pinned is not None and pinned.target == f"{US_A},{US_B}"
    assert _out(standin) == {US_A, US_B}
    for seed in range(20):  # the moving outage never leaves the pool without any zone
        injector.rng = random.Random(seed)
        injector.moving_stockout(ZONES)
        assert EAST not in _out(standin) and {US_A, US_B} <= _out(standin)
    injector.end_outages(ZONES)  # the run's end of outages does not end it
    assert _out(standin) == {US_A, US_B}
    assert injector.release_pin(ZONES, pool) is None  # VMs still sit there
    ended = injector.release_pin(ZONES, [{"name": "e2", "zone": EAST}])
    assert ended is not None and ended.kind == "pinning_stockout_end"
    assert _out(standin) == set()
    assert injector.outages_without_capacity(ZONES, until=1e12) == []
    injector.close()
