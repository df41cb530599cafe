"""Usage in money and the monthly budget on the emulators, through the app of functions/main.py:
jobs end through the real completion path (done flags, receipts priced at their class), then
`GET /usage` sums those receipts to the cent for their caller (an admin sees everyone), and a
budget crossed by a completed job refuses the next submit while a running job ends normally;
`comfyburst usage` prints the table and writes the CSV against the app served on loopback."""

from __future__ import annotations

import csv
import hashlib
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from werkzeug.serving import make_server

from comfyburst.domain import gpu_classes
from comfyburst.domain.receipts import job_pricer
from comfyburst.schema import JobPhases, WarmIdle
from comfyburst.services.complete import CompletionDeps, StorageObject, handle_done_flag
from comfyburst.states import JobState
from comfyburst_cli.main import app
from tests._api_support import body
from tests._completion_helpers import make_job, manifest
from tests.fakes import FixedClock
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)
from tests.test_cli_commands import no_settings  # noqa: F401  (fixture)

pytestmark = pytest.mark.emulator

KEYS = {"ana": "key-ana-usage", "bo": "key-bo-usage", "boss": "key-boss-usage"}
TEMPLATE = "projects/P/regions/zone/instanceTemplates/none"
# No class may create a VM and the pool label matches none: submitted jobs stay queued.
CLASSES = [
    {"name": "t4", "zones": ["zone-a"], "templates": {"zone": TEMPLATE}, "max_vms": 0,
     "price_per_hour": 0.35},
    {"name": "h100", "zones": ["zone-b"], "templates": {"zone": TEMPLATE}, "max_vms": 0,
     "price_per_hour": 11.06},
]  # fmt: skip


def _as(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


@pytest.fixture
def make_cloud(settings: Any, standin: Any, blob_store: Any, signer: Any, publisher: Any) -> Any:  # noqa: F811
    def make(limits: dict[str, Any], clock: Any = None) -> Cloud:
        suffix = uuid.uuid4().hex[:8]
        keyed = type(settings).model_validate(
            {
                **settings.model_dump(),
                "auth_mode": "api_key",
                "api_key_hashes": [
                    f"{name}={hashlib.sha256(key.encode()).hexdigest()}"
                    for name, key in KEYS.items()
                ],
                "admin_principals": ["key:boss"],
                "jobs_collection": f"usage_jobs_{suffix}",
                "vms_collection": f"usage_vms_{suffix}",
                "idempotency_collection": f"usage_idem_{suffix}",
                "pool_label": "comfyburst-pool=no-such-pool",
                "gpu_classes": CLASSES,
                "caller_limits": limits,
            }
        )
        return Cloud(keyed, standin, blob_store, signer, publisher, clock)

    return make


def _running(cloud: Cloud, job_id: str, caller: str, gpu_class: str, at: datetime) -> None:
    job = make_job(job_id, at, JobState.RUNNING, vm=f"vm-{job_id}")
    cloud.store.create_job(job.model_copy(update={"caller": caller, "gpu_class": gpu_class}))


def _complete(cloud: Cloud, job_id: str, done_at: datetime, run_s: float, idle_s: float) -> Any:
    """The job's done flag handled by the completion, as the trigger does."""
    cfg = cloud.settings
    deps = CompletionDeps(
        store=cloud.store,
        blobs=cloud.blobs,
        signer=cloud.deps.signer,
        publisher=cloud.deps.publisher,
        clock=FixedClock(done_at),
        signals_bucket=cfg.signals_bucket,
        outputs_bucket=cfg.outputs_bucket,
        price_of=job_pricer(gpu_classes.for_settings(cfg), cfg.pool_price_per_hour),
    )
    claimed = done_at - timedelta(seconds=run_s)
    phases = JobPhases(
        idle_since_at=claimed - timedelta(seconds=idle_s), claimed_at=claimed, done_at=done_at
    )
    flag = manifest(job_id, done_at, vm=f"vm-{job_id}").model_copy(update={"phases": phases})
    name = f"jobs/{job_id}/done.json"
    cloud.blobs.write(cfg.signals_bucket, name, flag.model_dump_json().encode(), "application/json")
    outcome = handle_done_flag(deps, StorageObject(cfg.signals_bucket, name))
    assert outcome["outcome"] == "completed", outcome
    ended = cloud.store.get_job(job_id)
    assert ended is not None and ended.state is JobState.SUCCEEDED and ended.receipt is not None
    return ended


def _usage(cloud: Cloud, who: str, **params: str) -> Any:
    return cloud.client.get("/usage", query_string=params, headers=_as(who))


def _cents(value: float) -> int:
    return round(value * 100)


def test_usage_sums_equal_the_receipts_of_the_same_jobs_to_the_cent(make_cloud: Any) -> None:
    cloud = make_cloud({})
    day = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    plan = [  # caller, class, day offset, run_s, idle_s
        ("key:ana", "t4", 0, 61.377, 0.0),
        ("key:ana", "h100", 0, 1234.5, 3.25),
        ("key:ana", "h100", 1, 17.003, 0.58),
        ("key:bo", "t4", 1, 4000.0, 12.0),
        ("key:bo", "h100", 2, 99.999, 0.0),
    ]
    ended = []
    for n, (caller, gpu_class, offset, run_s, idle_s) in enumerate(plan):
        at = day + timedelta(days=offset, minutes=n)
        _running(cloud, f"u{n}", caller, gpu_class, at - timedelta(hours=2))
        ended.append(_complete(cloud, f"u{n}", at, run_s, idle_s))
    # A job ended without a done flag has no receipt and costs nothing.
    cloud.store.create_job(
        make_job("u-cancelled", day, JobState.CANCELLED).model_copy(update={"caller": "key:ana"})
    )
    span = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}

    mine = _usage(cloud, "ana", **span, group_by="class")
    assert mine.status_code == 200, mine.get_json()
    report = mine.get_json()
    ana = [j for j in ended if j.caller == "key:ana"]
    assert report["all_callers"] is False and report["total"]["jobs"] == len(ana) == 3
    assert _cents(report["total"]["cost_usd"]) == _cents(sum(j.receipt.cost_usd for j in ana))
    for row in report["rows"]:
        of_class = [j.receipt for j in ana if j.receipt.gpu_class == row["key"]]
        assert row["jobs"] == len(of_class)
        assert _cents(row["cost_usd"]) == _cents(sum(r.cost_usd for r in of_class))
        assert row["billed_s"] == pytest.approx(sum(r.billed_s for r in of_class), abs=1e-3)
    assert {row["key"] for row in report["rows"]} == {"t4", "h100"}
    # A caller never sees another's jobs, whatever the grouping.
    own = _usage(cloud, "ana", **span, group_by="caller").get_json()["rows"]
    assert [row["key"] for row in own] == ["key:ana"]

    # An admin sees every caller; per caller and per day the sums are the same receipts.
    every = _usage(cloud, "boss", **span, group_by="caller").get_json()
    assert every["all_callers"] is True
    by_caller = {row["key"]: row for row in every["rows"]}
    assert set(by_caller) == {"key:ana", "key:bo"}
    for caller, row in by_caller.items():
        own = [j.receipt.cost_usd for j in ended if j.caller == caller]
        assert _cents(row["cost_usd"]) == _cents(sum(own)) and row["jobs"] == len(own)
    days = _usage(cloud, "boss", **span, group_by="day").get_json()
    assert [row["key"] for row in days["rows"]] == ["2026-11-28", "2026-11-29", "2026-11-30"]
    assert _cents(days["total"]["cost_usd"]) == _cents(sum(j.receipt.cost_usd for j in ended))

    # The range is half-open on finished_at: the first day alone holds the first two jobs.
    first = _usage(cloud, "boss", **{"from": "2026-11-28T00:00:00Z", "to": "2026-11-29T00:00:00Z"})
    assert first.get_json()["total"]["jobs"] == 2


def test_warm_vms_idle_reaches_an_admins_usage_apart_at_the_class_price(
    make_cloud: Any,
) -> None:
    """Stretches the VMs' workers recorded (FirestoreJobStore.add_warm_idle), read back in the
    range by their end, priced at their class's price, shown to an admin only."""
    cloud = make_cloud({})
    at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    _running(cloud, "w1", "key:ana", "t4", at - timedelta(hours=1))
    ended = _complete(cloud, "w1", at, run_s=60, idle_s=0)
    for vm, gpu_class, end, seconds in (
        ("vm-a", "t4", at, 3600.0),  # an hour at $0.35
        ("vm-b", "h100", at + timedelta(days=1), 1800.0),  # half an hour at $11.06
        ("vm-a", "t4", datetime(2026, 12, 1, 0, 0, tzinfo=UTC), 60.0),  # out of the range
    ):
        stretch = WarmIdle(
            vm_name=vm,
            gpu_class=gpu_class,
            started_at=end - timedelta(seconds=seconds),
            ended_at=end,
            idle_s=seconds,
        )
        cloud.store.add_warm_idle(stretch)
        cloud.store.add_warm_idle(stretch)  # a retried write: the same document
    span = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    admin = _usage(cloud, "boss", **span, group_by="class").get_json()
    rows = {row["key"]: row for row in admin["rows"]}
    assert rows["t4"]["warm_idle_s"] == 3600.0 and rows["t4"]["warm_idle_cost_usd"] == 0.35
    assert rows["h100"]["warm_idle_s"] == 1800.0 and rows["h100"]["warm_idle_cost_usd"] == 5.53
    assert rows["h100"]["jobs"] == 0
    total = admin["total"]
    assert total["warm_idle_cost_usd"] == 5.88 and total["cost_usd"] == ended.receipt.cost_usd
    by_caller = _usage(cloud, "boss", **span).get_json()
    assert [row["key"] for row in by_caller["rows"]] == ["(warm VMs)", "key:ana"]
    mine = _usage(cloud, "ana", **span, group_by="class").get_json()
    assert [row["key"] for row in mine["rows"]] == ["t4"]
    assert mine["total"]["warm_idle_s"] == 0 and mine["total"]["warm_idle_cost_usd"] == 0


def test_bad_usage_parameters_answer_400_naming_the_field(make_cloud: Any) -> None:
    cloud = make_cloud({})
    for params, field in (
        ({"group_by": "vm"}, "group_by"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "to"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"page": "2"}, "page"),
    ):
        answer = _usage(cloud, "ana", **params)
        assert answer.status_code == 400, (params, answer.get_json())
        error = answer.get_json()["error"]
        assert error["code"] == "invalid_request" and error["field"] == field, params
    assert cloud.client.get("/usage").status_code == 401


def test_a_budget_crossed_by_a_completed_job_refuses_the_next_submit_not_the_running_job(
    make_cloud: Any,
) -> None:
    # Three hours on the t4 ($0.35 per hour) cost $1.05: past ana's $1 budget. The API's clock
    # is mid-month: with the real one, a run in a month's first minutes would put the first
    # job's receipt in the month before, which the budget does not count.
    now = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
    cloud = make_cloud({"callers": {"key:ana": {"monthly_budget_usd": 1.0}}}, FixedClock(now))
    _running(cloud, "b-first", "key:ana", "t4", now - timedelta(hours=4))
    _running(cloud, "b-second", "key:ana", "t4", now - timedelta(hours=4))
    before = cloud.submit(body(options={"gpu_class": "t4"}), **_as("ana"))
    assert before.status_code == 202, before.get_json()  # under the budget: taken

    first = _complete(cloud, "b-first", now - timedelta(minutes=1), run_s=3 * 3600, idle_s=0)
    assert first.receipt.cost_usd == pytest.approx(1.05)
    jobs_before = sorted(j.job_id for j in cloud.jobs())
    refused = cloud.submit(body(options={"gpu_class": "t4"}), **_as("ana"))
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["details"]["monthly_budget_usd"] == 1.0
    assert error["details"]["spent_usd"] == pytest.approx(1.05)
    assert sorted(j.job_id for j in cloud.jobs()) == jobs_before  # nothing written
    # Another caller, without a budget, is untouched.
    assert cloud.submit(body(options={"gpu_class": "t4"}), **_as("bo")).status_code == 202

    # The job that was running when the budget was crossed ends normally, with its receipt.
    second = _complete(cloud, "b-second", now - timedelta(seconds=30), run_s=600, idle_s=0)
    assert second.state is JobState.SUCCEEDED and second.error is None
    spent = _usage(cloud, "ana", group_by="caller").get_json()["total"]
    assert _cents(spent["cost_usd"]) == _cents(first.receipt.cost_usd + second.receipt.cost_usd)


def test_the_cli_prints_the_table_and_writes_the_csv(
    make_cloud: Any,
    no_settings: Path,  # noqa: F811
) -> None:
    cloud = make_cloud({})
    at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    _running(cloud, "c1", "key:ana", "h100", at - timedelta(hours=1))
    ended = _complete(cloud, "c1", at, run_s=1800, idle_s=0)
    server = make_server("127.0.0.1", 0, cloud.client.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {
            "COMFYBURST_API_URL": f"http://127.0.0.1:{server.server_port}",
            "COMFYBURST_API_KEY": KEYS["ana"],
            "COLUMNS": "200",
        }
        span = ["--from", "2026-11-01T00:00:00Z", "--to", "2026-12-01T00:00:00Z"]
        csv_path = no_settings / "usage.csv"
        shown = CliRunner().invoke(
            app, ["usage", *span, "--group-by", "class", "--csv", str(csv_path)], env=env
        )
        assert shown.exit_code == 0, shown.output
        assert "h100" in shown.output and f"${ended.receipt.cost_usd:.2f}" in shown.output
        rows = list(csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines()))
        assert [row["key"] for row in rows] == ["h100", "total"]
        assert float(rows[0]["cost_usd"]) == ended.receipt.cost_usd
        refused = CliRunner().invoke(app, ["usage", "--group-by", "vm"], env=env)
        assert refused.exit_code == 2 and "group_by" in refused.output
        assert "warm idle" not in shown.output  # a caller's own usage has none
        # An admin's table and CSV show the warm VMs' idle apart.
        stretch = WarmIdle(
            vm_name="vm-w", gpu_class="h100", started_at=at - timedelta(hours=2),
            ended_at=at - timedelta(hours=1), idle_s=3600.0,
        )  # fmt: skip
        cloud.store.add_warm_idle(stretch)
        admin = {**env, "COMFYBURST_API_KEY": KEYS["boss"]}
        shown = CliRunner().invoke(
            app, ["usage", *span, "--group-by", "class", "--csv", str(csv_path)], env=admin
        )
        assert shown.exit_code == 0, shown.output
        assert "warm idle" in shown.output and "$11.06" in shown.output
        rows = list(csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines()))
        assert float(rows[0]["warm_idle_cost_usd"]) == 11.06
    finally:
        server.shutdown()
        thread.join(timeout=10)
