"""Usage in money and the monthly budget: the pure rules (domain/usage.py), and submit's budget
check on in-memory fakes (the emulator runs are in tests/test_usage_emulator.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from comfyburst.domain.usage import (
    GroupBy,
    UsageEntry,
    WarmIdleEntry,
    check_budget,
    month_start,
    next_month_start,
    parse_query,
    report,
    spent_usd,
)
from comfyburst.errors import BudgetExceeded, InvalidRequest
from comfyburst.schema import Receipt

NOW = datetime(2026, 12, 7, 4, 30, tzinfo=UTC)


def _receipt(gpu_class: str, cost: float, billed_s: float = 10.0) -> Receipt:
    return Receipt(
        gpu_class=gpu_class,
        price_per_hour=3.6,
        boot_s=0,
        idle_s=0,
        run_s=billed_s,
        billed_s=billed_s,
        cost_usd=cost,
    )


def test_totals_are_exact_sums_of_the_receipts() -> None:
    # 0.1 + 0.2 in floats is 0.30000000000000004; receipts add as whole micro-dollars.
    entries = [
        UsageEntry("key:a", NOW, _receipt("t4", 0.1, 0.001)),
        UsageEntry("key:a", NOW, _receipt("t4", 0.2, 0.002)),
        UsageEntry("key:b", NOW - timedelta(days=1), _receipt("h100", 0.000001)),
    ]
    query = parse_query({"group_by": ["class"]}, NOW, "key:a", all_callers=True)
    table = report(query, entries)
    rows = {row.key: row for row in table.rows}
    assert rows["t4"].cost_usd == 0.3 and rows["t4"].billed_s == 0.003 and rows["t4"].jobs == 2
    assert table.total.cost_usd == 0.300001 and table.total.jobs == 3
    assert spent_usd(entries) == 0.300001
    days = report(parse_query({"group_by": ["day"]}, NOW, None, all_callers=True), entries)
    assert [row.key for row in days.rows] == ["2026-12-06", "2026-12-07"]


def test_the_idle_after_a_job_is_shown_apart_from_its_cost() -> None:
    entry = UsageEntry("key:a", NOW, _receipt("t4", 0.5), idle_after_s=30.0)
    row = report(parse_query({}, NOW, "key:a", all_callers=False), [entry]).total
    assert row.cost_usd == 0.5  # the receipt's cost only
    assert row.idle_after_s == 30.0 and row.idle_after_cost_usd == 0.03  # 30 s at $3.6/h
    assert spent_usd([entry]) == 0.5  # a budget counts the receipts


def test_warm_vms_idle_is_shown_apart_to_an_admin_only() -> None:
    entry = UsageEntry("key:a", NOW, _receipt("t4", 0.5))
    warm = [
        WarmIdleEntry("t4", NOW, 3600.0, 0.35),  # an hour held warm at $0.35/h
        WarmIdleEntry("h100", NOW - timedelta(days=1), 0.001, 11.06),
    ]
    for group_by, keys in (
        ("caller", ["(warm VMs)", "key:a"]),
        ("class", ["h100", "t4"]),
        ("day", ["2026-12-06", "2026-12-07"]),
    ):
        admin = report(
            parse_query({"group_by": [group_by]}, NOW, None, all_callers=True), [entry], warm
        )
        assert [row.key for row in admin.rows] == keys
        assert admin.total.cost_usd == 0.5 and admin.total.jobs == 1  # the receipts only
        assert admin.total.warm_idle_s == 3600.001
        # Whole micro-dollars: 0.35 + 11.06 * 0.001 / 3600 (0.000003) = 0.350003.
        assert admin.total.warm_idle_cost_usd == 0.350003
    rows = {row.key: row for row in admin.rows}
    assert rows["2026-12-07"].warm_idle_cost_usd == 0.35 and rows["2026-12-07"].cost_usd == 0.5
    own = report(parse_query({}, NOW, "key:a", all_callers=False), [entry], warm)
    assert [row.key for row in own.rows] == ["key:a"]
    assert own.total.warm_idle_s == 0 and own.total.warm_idle_cost_usd == 0


def test_the_default_range_is_this_month_and_group_by_is_the_caller() -> None:
    query = parse_query({}, NOW, "key:a", all_callers=False)
    assert (query.start, query.end) == (datetime(2026, 12, 1, tzinfo=UTC), NOW)
    assert query.group_by is GroupBy.CALLER
    assert month_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2026, 12, 1, tzinfo=UTC
    )
    assert next_month_start(NOW) == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"group_by": ["vm"]}, "group_by"),
        ({"group_by": ["day", "class"]}, "group_by"),
        ({"from": ["2026-12-01"]}, "from"),  # no zone
        ({"from": ["2026-12-01T00:00:00"]}, "from"),
        ({"to": ["soon"]}, "to"),
        ({"from": ["2026-12-07T00:00:00Z"], "to": ["2026-12-07T00:00:00Z"]}, "to"),
        ({"from": ["2025-01-01T00:00:00Z"]}, "from"),  # more than 367 days
        ({"caller": ["key:b"]}, "caller"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(args: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_query(args, NOW, "key:a", all_callers=False)
    assert refused.value.field == field and refused.value.http_status == 400


def test_a_budget_refuses_at_or_past_it_never_below() -> None:
    check_budget(None, 10_000.0, NOW)
    check_budget(5.0, 4.999999, NOW)
    with pytest.raises(BudgetExceeded) as refused:
        check_budget(5.0, 5.0, NOW)
    body = refused.value.to_body()["error"]
    assert refused.value.http_status == 403 and body["code"] == "budget_exceeded"
    assert body["details"] == {
        "monthly_budget_usd": 5.0,
        "spent_usd": 5.0,
        "resets_at": "2027-01-01T00:00:00+00:00",
    }


def test_submit_s_budget_check_sums_the_month_s_terminal_jobs_of_the_caller() -> None:
    from comfyburst.domain.caller_limits import Limits
    from comfyburst.services.usage import check_monthly_budget
    from comfyburst.states import JobState
    from tests._completion_helpers import make_job
    from tests.fakes import InMemoryJobStore

    store = InMemoryJobStore()
    paid = [
        ("a1", "key:a", NOW - timedelta(days=1), 0.6),
        ("a2", "key:a", datetime(2026, 11, 30, 23, 0, tzinfo=UTC), 5.0),  # last month
        ("b1", "key:b", NOW - timedelta(hours=1), 5.0),  # another caller
    ]
    for job_id, caller, at, cost in paid:
        job = make_job(job_id, at, JobState.SUCCEEDED)
        store.create_job(job.model_copy(update={"caller": caller, "receipt": _receipt("t4", cost)}))
    limits = Limits(monthly_budget_usd=1.0)
    check_monthly_budget(None, store, "key:a", limits, NOW)  # $0.60 of $1: taken
    job = make_job("a3", NOW - timedelta(minutes=5), JobState.SUCCEEDED)
    store.create_job(job.model_copy(update={"caller": "key:a", "receipt": _receipt("t4", 0.4)}))
    with pytest.raises(BudgetExceeded) as refused:
        check_monthly_budget(None, store, "key:a", limits, NOW)  # $1.00: reached
    assert refused.value.details["spent_usd"] == 1.0
    check_monthly_budget(None, store, "key:a", Limits(), NOW)  # no budget: nothing read


def test_an_admins_range_with_more_warm_stretches_than_an_answer_reads_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from comfyburst.schema import WarmIdle
    from comfyburst.services import usage as service

    monkeypatch.setattr(service, "MAX_USAGE_JOBS", 2)
    read: list[str] = []

    class _Views:
        def usage_entries(self, *args: object, **kwargs: object) -> list[UsageEntry]:
            return []

        def warm_idle_entries(self, start: datetime, end: datetime) -> list[WarmIdle]:
            read.append("warm")
            at = end - timedelta(hours=1)
            return [WarmIdle(vm_name="v", gpu_class="t4", started_at=at, ended_at=at, idle_s=1)] * 3

    with pytest.raises(service.UsageRangeTooLarge):
        service.get_usage(_Views(), {}, NOW, caller="key:boss", admins={"key:boss"})
    # A caller's own usage never reads them.
    read.clear()
    own = service.get_usage(_Views(), {}, NOW, caller="key:a", admins={"key:boss"})
    assert read == [] and own.total.warm_idle_s == 0

    class _ManyJobs(_Views):
        def usage_entries(self, *args: object, **kwargs: object) -> list[UsageEntry]:
            return [UsageEntry("key:a", NOW, _receipt("t4", 0.1))] * 3

    with pytest.raises(service.UsageRangeTooLarge, match="jobs finished"):
        service.get_usage(_ManyJobs(), {}, NOW, caller="key:a", admins={"key:boss"})
