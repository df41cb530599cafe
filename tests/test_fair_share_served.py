"""Fair share's second key, "served least recently" (domain/fair_share.py): when callers run as
many jobs each (none, with one VM that just finished a job), the caller whose latest job of the
class started longest ago (or never) goes next. Pure tables, no network, no sleeps."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from comfyburst.domain import dispatch_rule, fair_share
from comfyburst.domain.gpu_classes import build
from comfyburst_worker.claims import rank_queued
from tests.deploy import hcl
from tests.test_fair_share import L4, T0, T4, J, _worker_job, ids, queue, reaper_dispatches

FIFO = fair_share.DispatchOrder.FIFO


def ago(minutes: int) -> datetime:
    return T0 - timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("running", "served", "first"),
    [
        # The hole FIFO fell into: H's job just finished, nobody runs anything; L never served.
        ({}, {"H": ago(0)}, ["L-0", "H-0", "L-1", "H-1"]),
        # Both served, L more recently: H (older service) goes first, then they take turns.
        ({}, {"H": ago(9), "L": ago(1)}, ["H-0", "L-0", "H-1", "L-1"]),
        # H served long ago, L just now: H first.
        ({}, {"H": ago(60), "L": ago(0)}, ["H-0", "L-0"]),
        # Running counts come first: H runs none, L one; L's never-served does not matter.
        ({"L": 1}, {"H": ago(0)}, ["H-0", "L-0", "H-1"]),
        # Nobody served (no lookup made): ties go to the oldest job, as before.
        ({}, {}, ["H-0", "L-0", "H-1", "L-1"]),
    ],
)
def test_order_breaks_running_ties_by_least_recently_served(
    running: dict[str | None, int], served: dict[str | None, datetime], first: list[str]
) -> None:
    jobs = queue(("H", 20), ("L", 2))
    ranked = fair_share.order(jobs, running, served=served)
    assert ids(ranked)[: len(first)] == first
    assert sorted(ids(ranked)) == sorted(ids(jobs))  # none lost


def test_a_caller_served_longer_ago_goes_before_an_older_job() -> None:
    jobs = queue(("L", 2), ("H", 2))  # L's jobs are the oldest, but L was served last
    ranked = fair_share.order(jobs, {}, served={"H": ago(9), "L": ago(1)})
    assert ids(ranked) == ["H-0", "L-0", "H-1", "L-1"]


def test_fifo_ignores_when_callers_were_served() -> None:
    jobs = queue(("H", 3), ("L", 1))
    ranked = fair_share.order(jobs, {}, dispatch_order=FIFO, served={"H": ago(0)})
    assert ranked == jobs


def test_max_running_still_holds_over_served() -> None:
    jobs = queue(("H", 3), ("L", 2))
    limited = fair_share.order(jobs, {"L": 1}, lambda c: 1 if c == "L" else None, served={})
    assert ids(limited) == ["H-0", "H-1", "H-2"]  # L at its limit: never-served or not


def test_pick_looks_at_service_in_the_jobs_own_class() -> None:
    classes = build([T4, L4], "t4", None)
    h = [J(f"H-{i}", "H", T0 + timedelta(seconds=i), "t4") for i in range(5)]
    lt = J("L-t4", "L", T0 + timedelta(seconds=10), "t4")
    # H was served on t4 just now, L on t4 an hour ago: L's t4 job takes the one t4 VM.
    served = {("H", "t4"): ago(0), ("L", "t4"): ago(60), ("L", "l4"): ago(0)}
    assert ids(dispatch_rule.pick([*h, lt], {"t4": 1}, {}, classes, {}, served=served)) == ["L-t4"]
    # H's recent service was on l4, not t4: on t4 H counts as never served, so it goes first.
    other = {("H", "l4"): ago(0), ("L", "t4"): ago(60)}
    assert ids(dispatch_rule.pick([*h, lt], {"t4": 1}, {}, classes, {}, served=other)) == ["H-0"]


def test_lookup_order_is_fewest_running_then_oldest_job() -> None:
    jobs = queue(("A", 2), ("B", 1), ("C", 1))
    assert fair_share.lookup_order(jobs, {"A": 1}) == ["B", "C", "A"]
    assert fair_share.lookup_order(queue(("A", 3)), {}) == []  # one caller: nothing to ask


def test_lookup_order_leaves_out_callers_at_their_limit() -> None:
    jobs = queue(("A", 2), ("B", 1), ("C", 1))
    at_one = lambda c: 1 if c == "A" else None  # noqa: E731
    assert fair_share.lookup_order(jobs, {"A": 1}, at_one) == ["B", "C"]  # A cannot start
    # Only B may start: nobody's service matters, nothing is asked.
    assert fair_share.lookup_order(queue(("A", 2), ("B", 1)), {"A": 1}, at_one) == []


class _Scan:
    """FirestoreJobStore.last_started's shape, recording what it is asked."""

    def __init__(self, found: dict[str | None, datetime]) -> None:
        self.found = found
        self.asked: list[tuple[str, list[str | None]]] = []

    def __call__(self, gpu_class: str, callers: list[str | None]) -> dict[str | None, datetime]:
        self.asked.append((gpu_class, list(callers)))
        return {c: at for c, at in self.found.items() if c in callers}


def test_last_served_asks_the_likeliest_callers_once_and_counts_the_rest_served_now() -> None:
    callers = [f"c{i:02d}" for i in range(fair_share.SERVED_LOOKUPS + 2)]
    jobs = queue(*((c, 1) for c in callers))
    scan = _Scan({"c00": ago(5)})
    served = fair_share.last_served(scan, "t4", jobs, {}, T0)
    assert scan.asked == [("t4", callers[: fair_share.SERVED_LOOKUPS])]
    assert served["c00"] == ago(5) and "c01" not in served  # never served: absent
    assert all(served[c] == T0 for c in callers[fair_share.SERVED_LOOKUPS :])
    one = _Scan({})
    assert fair_share.last_served(one, "t4", queue(("A", 3)), {}, T0) == {} and not one.asked


def test_the_reaper_looks_up_service_only_where_its_plan_leaves_jobs_queued() -> None:
    from comfyburst.domain.gpu_classes import build as build_classes
    from comfyburst.domain.reaper import DispatchJob, ReaperPolicy
    from comfyburst.services._fair_served import served_for

    jobs = [
        _worker_job(job_id, caller, i).model_copy(update={"gpu_class": cls})
        for i, (job_id, caller, cls) in enumerate(
            [
                ("a-0", "key:a", "t4"),
                ("b-0", "key:b", "t4"),
                ("c-0", "key:a", "l4"),
                ("d-0", "key:b", "l4"),
            ]
        )
    ]
    policy = ReaperPolicy(
        boot_timeout_s=600,
        heartbeat_timeout_s=600,
        max_attempts=3,
        dispatch_grace_s=0,
        classes=build_classes([T4, L4], "t4", None),
    )

    class Store:
        last_started = _Scan({"key:a": ago(1)})

    # t4: one of two dispatched (the order decides which); l4: both (it cannot matter).
    actions = [DispatchJob("a-0"), DispatchJob("c-0"), DispatchJob("d-0")]
    served = served_for(Store(), jobs, actions, policy, T0)  # type: ignore[arg-type]
    assert [cls for cls, _ in Store.last_started.asked] == ["t4"]
    assert served == {("key:a", "t4"): ago(1)}


def test_the_draining_worker_ranks_by_the_same_served_rule() -> None:
    h = [_worker_job(f"h-{i}", "key:h", i) for i in range(20)]
    light = _worker_job("l-0", "key:l", 100)
    for vm in ("gpu-0", "gpu-1"):
        ranked = rank_queued([*h, light], set(), vm, served={"key:h": ago(0)})
        assert ranked[0].job_id == "l-0"  # nobody runs; H was just served
    before = rank_queued([*h, light], set(), "gpu-0", served={"key:h": ago(9), "key:l": ago(1)})
    assert before[0].caller == "key:h"


def test_the_reapers_plan_gives_the_free_vm_to_the_caller_served_least_recently() -> None:
    # Nobody runs anything; A was served on t4 a minute ago, B never.
    served = {("key:a", "t4"): T0 + timedelta(minutes=4)}
    assert reaper_dispatches([]) == ["a-0"]  # nothing known: the oldest job
    assert reaper_dispatches([], served=served) == ["b-0"]
    assert reaper_dispatches([], "fifo", served) == ["a-0"]


def test_firestore_tf_declares_the_index_of_the_served_lookup() -> None:
    # FirestoreJobStore.last_started: caller ==, gpu_class ==, ordered by started_at desc.
    index = hcl.resources("google_firestore_index")["jobs_served"]
    fields = [(f["field_path"], f.get("order")) for f in index["fields"]]
    assert fields == [
        ("caller", "ASCENDING"),
        ("gpu_class", "ASCENDING"),
        ("started_at", "DESCENDING"),
        ("__name__", "DESCENDING"),
    ]
    assert index["collection"] == "jobs"
