"""Warm schedules end to end on the local cloud: with a window open today, the VM of the first
job stays up past its drain grace holding the warm lease, and the next job's receipt shows no
boot and none of the time it was held warm (recorded apart); the reaper, run with a schedule
closed at its (injected) `now`, stops that warm VM, and run later starts it again for the
schedule: the first job of that boot carries neither the boot nor the wait."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from comfyburst.adapters.clock import SystemClock
from comfyburst.client import ApiClient, ClientSettings
from comfyburst.domain._reaper_warm import STOP_LEASE_S
from comfyburst.domain.gpu_classes import GpuClasses
from comfyburst.domain.reaper import warm_lease_id
from comfyburst.domain.warm import DAY_NAMES, WarmWindow
from localcloud.config import LocalGpuClass
from tests._e2e_support import invert_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

L4 = LocalGpuClass("l4", ("us-central1-a",), price_per_hour=0.8536)


def _today_and_tomorrow() -> str:
    today = SystemClock().now().weekday()
    return f"{DAY_NAMES[today]},{DAY_NAMES[(today + 1) % 7]}"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Its own cloud: one class whose warm window is open all of today (and tomorrow, should
    the run cross midnight UTC), a short drain grace so staying warm is seen quickly."""
    from localcloud import _gpu_classes
    from localcloud.scenarios.harness import cloud_config, running_cloud

    base = cloud_config(tmp_path_factory.mktemp("warm"), pool_size=1)
    # No background reaper: the test runs each pass itself (a submit dispatches by itself).
    config = replace(base, gpu_classes=(L4,), reaper_period_s=None)
    declared = json.loads(_gpu_classes.settings_env(config)["COMFYBURST_GPU_CLASSES"])
    window = {"days": _today_and_tomorrow(), "from": "00:00", "to": "24:00", "vms": 1}
    declared[0]["warm"] = [window]
    env = {
        **config.settings_env,
        "COMFYBURST_GPU_CLASSES": json.dumps(declared),
        "COMFYBURST_DRAIN_GRACE_S": "5",
    }
    with running_cloud(replace(config, settings_env=env)) as running:
        yield running


@pytest.fixture(scope="module")
def localcloud_env(cloud: Any) -> dict[str, str]:
    """This module's own cloud (conftest's autouse wipe wipes it between tests)."""
    return dict(cloud.env)


def _until(what: str, check: Any, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return found


def test_a_warm_vm_takes_the_next_job_without_boot_and_stops_outside(
    localcloud_env: dict[str, str],
) -> None:
    from comfyburst import wiring
    from comfyburst.services.reap import ReaperDeps, policy_from, run_reaper
    from comfyburst.settings import FunctionSettings

    env = localcloud_env
    settings = FunctionSettings()
    store, fleet = wiring.job_store(settings), wiring.fleet(settings)
    client = ApiClient(ClientSettings(api_url=env["COMFYBURST_API_URL"], auth="none"))
    (listed,) = client.gpu_classes()["gpu_classes"]
    assert listed["warm_cost_per_week"] == round(2 * 24 * 0.8536, 2)

    request = {"workflow": invert_workflow(), "options": {"timeout_s": 240}}
    first = client.wait(client.submit(request)["job_id"], poll_s=0.3, timeout_s=240)
    assert first["state"] == "succeeded", first.get("error")
    cold = store.get_job(first["job_id"])
    assert cold is not None and cold.vm is not None and cold.receipt is not None
    vm = cold.vm.name
    assert cold.receipt.boot_s > 0  # the cold start

    def lease() -> str | None:
        record, _ = store.get_vm(vm)
        return record.lease.job_id if record and record.lease else None

    # Past its 5 s drain grace the worker stays, holding the warm lease.
    _until("the VM to stay warm", lambda: lease() == warm_lease_id(vm), timeout_s=90)
    time.sleep(8.0)  # held warm a while
    second = client.wait(client.submit(request)["job_id"], poll_s=0.3, timeout_s=240)
    assert second["state"] == "succeeded", second.get("error")
    warm = store.get_job(second["job_id"])
    assert warm is not None and warm.vm is not None and warm.receipt is not None
    assert warm.vm.name == vm
    assert warm.receipt.boot_s == 0, warm.receipt
    # Its idle is the drain grace after the first job, up to the warm hold; the 8 s and more
    # the VM was then held warm are the schedule's, recorded apart (an admin's usage shows it).
    phases = warm.phases
    assert phases is not None and phases.idle_since_at and phases.warm_since_at
    span = round((phases.warm_since_at - phases.idle_since_at).total_seconds(), 3)
    assert warm.receipt.idle_s == span, warm.receipt
    (held,) = _until(
        "the warm stretch recorded up to the claim",
        lambda: [d for d in _warm_stretches(store, vm) if d["ended_at"] >= phases.claimed_at],
    )
    assert held["started_at"] == phases.warm_since_at and held["gpu_class"] == "l4"
    assert held["idle_s"] >= 8.0
    _until("the VM to be warm again", lambda: lease() == warm_lease_id(vm), timeout_s=90)

    # Outside the window (the schedule, as the reaper sees it at `now`, is closed then).
    now = SystemClock().now()
    closed_day = DAY_NAMES[(now.weekday() + 3) % 7]
    closed = WarmWindow.model_validate(
        {"days": closed_day, "from": "00:00", "to": "24:00", "vms": 1}
    )
    policy = policy_from(settings)
    assert policy.classes is not None
    classes = tuple(c.model_copy(update={"warm": [closed]}) for c in policy.classes.classes)
    outside = replace(policy, classes=GpuClasses(classes, policy.classes.default))
    deps = ReaperDeps(store, fleet, wiring.publisher(settings), SystemClock())
    stopped_at = SystemClock().now()
    # The warm worker rewrites its VM's document every drain grace: a stop whose conditional
    # write lands just after such a rewrite is skipped (the document changed) and the next
    # pass applies it, as the next scheduled pass would.
    for _ in range(5):
        summary = run_reaper(deps, outside, now + timedelta(seconds=1))
        stops = [
            (a["name"], a["outcome"]) for a in summary["actions"] if a["action"] == "StopWarmVm"
        ]
        if stops != [(vm, "skipped")]:
            break
    assert stops == [(vm, "applied")], summary["actions"]
    _until(
        "the warm VM to stop",
        lambda: next(s.status for s in fleet.list() if s.name == vm) == "TERMINATED",
        timeout_s=60,
    )
    # Its worker, stopped while held warm, recorded that stretch up to its end, and the idle
    # after the second job up to where the stretch began.
    (last,) = _until(
        "the stretch its stop ended",
        lambda: [d for d in _warm_stretches(store, vm)[1:] if d["ended_at"] >= stopped_at],
    )
    after = _until(
        "the second job's idle after it",
        lambda: (j := store.get_job(second["job_id"])) and j.idle_after_s is not None and j,
    )
    assert phases.done_at is not None
    drained = (last["started_at"] - after.phases.done_at).total_seconds()
    assert after.idle_after_s == pytest.approx(drained, abs=0.002), (after.idle_after_s, last)

    # Inside the window again once its stop's marker has expired (the reaper's `now` past it):
    # the reaper starts the VM for the schedule, with no job. The first job it takes shows
    # neither that boot nor the wait on its receipt; both are the schedule's stretch.
    later = SystemClock().now() + timedelta(seconds=STOP_LEASE_S + 1)
    summary = run_reaper(deps, policy, later)
    starts = [(a["name"], a["outcome"]) for a in summary["actions"] if a["action"] == "StartWarmVm"]
    assert starts == [(vm, "applied")], summary["actions"]
    _until("the started VM to be warm", lambda: lease() == warm_lease_id(vm), timeout_s=120)
    third = client.wait(client.submit(request)["job_id"], poll_s=0.3, timeout_s=240)
    assert third["state"] == "succeeded", third.get("error")
    started = store.get_job(third["job_id"])
    assert started is not None and started.vm is not None and started.vm.name == vm
    receipt = started.receipt
    assert receipt is not None and (receipt.boot_s, receipt.idle_s) == (0, 0), receipt
    claimed_at = started.phases.claimed_at if started.phases else None
    assert claimed_at is not None and started.phases.warm_since_at is not None
    # From its agent's start, past its drain grace, to the claim.
    (booted,) = _until(
        "its stretch recorded up to the claim",
        lambda: [d for d in _warm_stretches(store, vm)[2:] if d["ended_at"] >= claimed_at],
    )
    assert booted["started_at"] == started.phases.warm_since_at
    assert booted["idle_s"] >= 5.0, _warm_stretches(store, vm)


def _warm_stretches(store: Any, vm: str) -> list[dict[str, Any]]:
    """The warm stretches the VM's worker recorded (`vms_warm_idle`), oldest first."""
    docs = [snap.to_dict() for snap in store._client.collection("vms_warm_idle").stream()]
    return sorted((d for d in docs if d["vm_name"] == vm), key=lambda d: d["started_at"])
