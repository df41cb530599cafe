"""Fair share between callers (domain/fair_share.py) and its use by the reaper's pick and the
draining worker's ranking: pure tables, no network, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfyburst.domain import dispatch_rule, fair_share
from comfyburst.domain.caller_limits import CallerLimits, Limits
from comfyburst.domain.gpu_classes import GpuClass, build
from comfyburst.states import JobState
from comfyburst_worker.claims import rank_queued
from tests._completion_helpers import make_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T4 = GpuClass(name="t4", zones=["zone-a"], templates={"zone": "t"}, max_vms=9)
L4 = GpuClass(name="l4", zones=["zone-b"], templates={"zone": "t"}, max_vms=9)


@dataclass(frozen=True)
class J:
    job_id: str
    caller: str | None
    created_at: datetime
    gpu_class: str | None = None
    state: JobState = JobState.QUEUED


def queue(*spec: tuple[str, int]) -> list[J]:
    """Jobs submitted in the order given: (caller, how many), each a second after the last."""
    jobs, t = [], 0
    for caller, n in spec:
        for i in range(n):
            jobs.append(J(f"{caller}-{i}", caller, T0 + timedelta(seconds=t)))
            t += 1
    return jobs


def ids(jobs: list[J]) -> list[str]:
    return [j.job_id for j in jobs]


@pytest.mark.parametrize(
    ("spec", "running", "limits", "first"),
    [
        # A queued 500 and runs 2; B queued 1 afterwards: B's goes first.
        ((("A", 500), ("B", 1)), {"A": 2}, {}, ["B-0", "A-0", "A-1"]),
        # Nobody runs: a tie on running, so the oldest job, then the callers take turns.
        ((("A", 3), ("B", 2)), {}, {}, ["A-0", "B-0", "A-1", "B-1", "A-2"]),
        # Equal running counts: the oldest queued job first.
        ((("B", 2), ("A", 2)), {"A": 1, "B": 1}, {}, ["B-0", "A-0", "B-1", "A-1"]),
        # B runs 3, A 1: A catches up first; at 3 each B goes, A having just been served.
        (
            (("A", 4), ("B", 2)),
            {"A": 1, "B": 3},
            {},
            ["A-0", "A-1", "B-0", "A-2", "B-1", "A-3"],
        ),
        # A at its running limit: skipped, its jobs wait; B's start.
        ((("A", 3), ("B", 2)), {"A": 2}, {"A": 2}, ["B-0", "B-1"]),
        # A limited to 3 with 2 running: one more of A's, then only B's.
        ((("A", 3), ("B", 3)), {"A": 2}, {"A": 3}, ["B-0", "B-1", "A-0", "B-2"]),
    ],
)
def test_order_table(
    spec: tuple[tuple[str, int], ...],
    running: dict[str | None, int],
    limits: dict[str, int],
    first: list[str],
) -> None:
    ranked = fair_share.order(queue(*spec), running, lambda c: limits.get(c or ""))
    assert ids(ranked)[: len(first)] == first


def test_order_keeps_each_callers_jobs_oldest_first_and_loses_none() -> None:
    jobs = queue(("A", 50), ("B", 5), ("C", 1))
    ranked = fair_share.order(jobs, {"A": 4})
    assert sorted(ids(ranked)) == sorted(ids(jobs))
    for caller in "ABC":
        mine = [j for j in ranked if j.caller == caller]
        assert mine == sorted(mine, key=lambda j: j.created_at)
    # C (nothing running) and B go before A's backlog; A (4 running) waits its turn.
    assert ids(ranked)[:3] == ["B-0", "C-0", "B-1"]


def test_one_caller_is_plain_oldest_first() -> None:
    jobs = queue(("A", 5))
    assert fair_share.order(jobs, {"A": 7}) == jobs


def test_running_by_caller_counts_starting_and_running_only() -> None:
    live = [
        J("1", "A", T0, state=JobState.RUNNING),
        J("2", "A", T0, state=JobState.STARTING),
        J("3", "A", T0, state=JobState.QUEUED),
        J("4", None, T0, state=JobState.RUNNING),
    ]
    assert fair_share.running_by_caller(live) == {"A": 2, None: 1}


def test_pick_gives_each_class_its_room_in_fair_order() -> None:
    classes = build([T4, L4], "t4", None)
    a = [J(f"A-{i}", "A", T0 + timedelta(seconds=i), "t4") for i in range(10)]
    b = [J("B-l4", "B", T0 + timedelta(seconds=20), "l4")]
    b += [J("B-t4", "B", T0 + timedelta(seconds=21), "t4")]
    picked = dispatch_rule.pick(a + b, {"t4": 2, "l4": 1}, {}, classes, {"A": 2})
    # B (none running) first: its l4 job takes l4's one VM, its t4 job one of t4's two; then
    # B and A both count 2 and A's job is the older.
    assert ids(picked) == ["B-l4", "B-t4", "A-0"]


def test_pick_leaves_a_caller_at_its_limit_queued() -> None:
    classes = build([T4], "t4", None)
    jobs = queue(("A", 5), ("B", 1))
    limits = CallerLimits(callers={"A": Limits(max_running=2)})
    picked = dispatch_rule.pick(jobs, {"t4": 5}, {}, classes, {"A": 2}, limits.max_running)
    assert ids(picked) == ["B-0"]


def test_caller_limits_max_running_merges_like_the_other_fields() -> None:
    limits = CallerLimits(
        default=Limits(max_running=2, max_queued=10),
        callers={"key:farm": Limits(max_running=8), "key:q": Limits(max_queued=3)},
    )
    assert limits.max_running("key:farm") == 8
    assert limits.max_running("key:q") == 2
    assert limits.max_running(None) == 2
    assert CallerLimits().max_running("key:x") is None
    with pytest.raises(ValueError):
        Limits(max_running=0)


def test_running_limits_reach_the_vm_as_a_table_the_worker_reads_back() -> None:
    limits = CallerLimits(
        default=Limits(max_running=2),
        callers={"key:farm": Limits(max_running=8), "key:q": Limits(max_queued=3)},
    )
    table = limits.running_limits()
    assert table == {"*": 2, "key:farm": 8, "key:q": 2}
    read = fair_share.from_table(table)
    assert [read(c) for c in ("key:farm", "key:q", "key:other", None)] == [8, 2, 2, 2]
    assert fair_share.from_table({})("key:any") is None
    only = fair_share.from_table(
        CallerLimits(callers={"key:a": Limits(max_running=1)}).running_limits()
    )
    assert (only("key:a"), only("key:b")) == (1, None)


def _worker_job(job_id: str, caller: str, seconds: int) -> Any:
    job = make_job(job_id, T0 + timedelta(seconds=seconds), JobState.QUEUED, vm=None)
    return job.model_copy(update={"caller": caller})


def test_the_draining_worker_ranks_by_the_same_rule() -> None:
    a = [_worker_job(f"a-{i}", "key:a", i) for i in range(30)]
    b = _worker_job("b-0", "key:b", 100)
    for vm in ("gpu-0", "gpu-1", "gpu-2"):
        ranked = rank_queued([*a, b], set(), vm, running={"key:a": 2})
        assert ranked[0].job_id == "b-0"  # whatever this VM's spread order of a's jobs
        assert len(ranked) == 31
    # A at its limit: none of its jobs is offered; B's is.
    limited = rank_queued([*a, b], set(), "gpu-0", running={"key:a": 2}, max_running=lambda c: 2)
    assert [j.job_id for j in limited] == ["b-0"]


def test_pick_passes_over_a_job_whose_class_is_full_to_the_callers_next() -> None:
    classes = build([T4, L4], "t4", None)
    jobs = [
        J("a-l4", "A", T0, "l4"),
        J("a-t4", "A", T0 + timedelta(seconds=1), "t4"),
        J("b-t4", "B", T0 + timedelta(seconds=2), "t4"),
    ]
    # l4 has no VM: A's oldest waits; its t4 job and B's take t4's two.
    assert ids(dispatch_rule.pick(jobs, {"t4": 2}, {}, classes)) == ["a-t4", "b-t4"]
    assert ids(dispatch_rule.pick(jobs, {"t4": 1}, {}, classes)) == ["a-t4"]


# --- dispatch_order: fifo (the order before fair share, kept for comparison) ----------------


def test_fifo_orders_the_oldest_first_whoever_runs_what() -> None:
    jobs = queue(("A", 500), ("B", 1))
    fifo = fair_share.DispatchOrder.FIFO
    # The case fair share exists for: B's one job waits behind all of A's backlog.
    assert fair_share.order(jobs, {"A": 2}, dispatch_order=fifo) == jobs
    assert ids(fair_share.order(jobs, {"A": 2}))[0] == "B-0"  # fair (the default): B first


def test_fifo_still_keeps_each_callers_max_running() -> None:
    jobs = queue(("A", 3), ("B", 2))
    fifo = fair_share.DispatchOrder.FIFO
    ranked = fair_share.order(jobs, {"A": 1}, lambda c: 2 if c == "A" else None, fifo)
    assert ids(ranked) == ["A-0", "B-0", "B-1"]  # A reaches 2 after its oldest; then only B's


def test_fifo_pick_fills_each_class_with_its_oldest_jobs() -> None:
    classes = build([T4, L4], "t4", None)
    a = [J(f"A-{i}", "A", T0 + timedelta(seconds=i), "t4") for i in range(10)]
    b = [J("B-l4", "B", T0 + timedelta(seconds=20), "l4")]
    b += [J("B-t4", "B", T0 + timedelta(seconds=21), "t4")]
    fifo = fair_share.DispatchOrder.FIFO
    picked = dispatch_rule.pick(
        a + b, {"t4": 2, "l4": 1}, {}, classes, {"A": 2}, dispatch_order=fifo
    )
    # Per class still: l4's VM goes to B's l4 job; t4's two to A's two oldest, B's t4 waits.
    assert ids(picked) == ["A-0", "A-1", "B-l4"]


def test_the_draining_worker_ranks_fifo_when_told() -> None:
    a = [_worker_job(f"a-{i}", "key:a", i) for i in range(30)]
    b = _worker_job("b-0", "key:b", 100)
    ranked = rank_queued(
        [*a, b], set(), "gpu-0", running={"key:a": 2}, dispatch_order=fair_share.DispatchOrder.FIFO
    )
    assert ranked[-1].job_id == "b-0" and len(ranked) == 31


def test_dispatch_order_setting_reaches_the_reaper_and_the_vms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from comfyburst.services.reap import policy_from
    from comfyburst.settings import FunctionSettings

    for name in ("PROJECT_ID", "JOBS_BUCKET", "OUTPUTS_BUCKET", "SIGNALS_BUCKET", "RESULTS_TOPIC"):
        monkeypatch.setenv(f"COMFYBURST_{name}", "x")
    default = FunctionSettings()
    assert policy_from(default).dispatch_order is fair_share.DispatchOrder.FAIR
    assert default.deployment_config().dispatch_order is fair_share.DispatchOrder.FAIR
    monkeypatch.setenv("COMFYBURST_DISPATCH_ORDER", "fifo")
    fifo = FunctionSettings()
    assert policy_from(fifo).dispatch_order is fair_share.DispatchOrder.FIFO
    config = fifo.deployment_config()
    assert config.dispatch_order is fair_share.DispatchOrder.FIFO
    assert type(config).model_validate_json(config.model_dump_json()) == config  # as a VM reads
    monkeypatch.setenv("COMFYBURST_DISPATCH_ORDER", "lifo")
    with pytest.raises(ValidationError, match="dispatch_order"):
        FunctionSettings()


def reaper_dispatches(
    live: list[Any], order: str = "fair", served: dict[Any, datetime] | None = None
) -> list[str]:
    """What the reaper's plan dispatches onto one free t4 VM when caller A queued three jobs,
    then B one, beside the `live` jobs; `served`: the plan's "last served" per (caller, class)."""
    from comfyburst.domain.gpu_classes import CLASS_LABEL
    from comfyburst.domain.reaper import DispatchJob, ReaperPolicy, plan
    from comfyburst.ports import VmStatus

    jobs = [_worker_job(f"a-{i}", "key:a", i) for i in range(3)]
    jobs.append(_worker_job("b-0", "key:b", 10))
    jobs = [j.model_copy(update={"gpu_class": "t4"}) for j in jobs]
    vm = VmStatus(name="t4-vm", zone="zone-a", status="TERMINATED", labels={CLASS_LABEL: "t4"})
    policy = ReaperPolicy(
        boot_timeout_s=600,
        heartbeat_timeout_s=600,
        max_attempts=3,
        dispatch_grace_s=0,
        classes=build([T4.model_copy(update={"max_vms": 1})], "t4", None),
        dispatch_order=fair_share.DispatchOrder(order),
    )
    now = T0 + timedelta(minutes=5)
    actions = plan([*live, *jobs], [], [vm], now, policy, served=served)
    return [a.job_id for a in actions if isinstance(a, DispatchJob)]


def test_the_reapers_plan_dispatches_in_the_policys_order() -> None:
    running = _worker_job("a-run", "key:a", -60).model_copy(
        update={"state": JobState.RUNNING, "gpu_class": "t4", "vm": None}
    )
    assert reaper_dispatches([running]) == ["b-0"]  # fair: B runs none, A one
    assert reaper_dispatches([running], "fifo") == ["a-0"]
