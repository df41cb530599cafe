"""terraform/monitoring.tf against the log lines the code emits, and its dashboard's layout.

The log lines come from the real use cases (the done flag's completion, one reaper period) on
in-memory stores, formatted by the real JsonFormatter, then wrapped as Cloud Logging wraps a
Cloud Run container's JSON line: `severity`, `time` and the `logging.googleapis.com/*` keys
become entry fields, every other key stays in `jsonPayload`. Each metric's filter is evaluated
by `matches` below, which knows exactly the forms monitoring.tf uses (`path="value"`,
`path:"value"` joined by AND) and refuses any other, so a new form needs it taught first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from comfyburst.logs import JsonFormatter
from comfyburst.schema import JobPhases
from comfyburst.services.complete import StorageObject, handle_done_flag
from comfyburst.services.reap import ReaperDeps, run_reaper
from comfyburst.states import JobState
from tests._completion_helpers import fake_completion_deps, lease_record, make_job, manifest
from tests.deploy import hcl
from tests.fakes import FakeFleet, FixedClock, InMemoryJobStore, InMemoryPublisher

MONITORING = hcl.TERRAFORM / "monitoring.tf"
TEMPLATE = hcl.TERRAFORM / "dashboard.json.tftpl"
OPERATIONS = hcl.REPO / "docs" / "OPERATIONS.md"
PREFIX = hcl.variables()["name_prefix"]["default"]
PROMQL_NAME = re.compile(r"logging_googleapis_com:user_\w+")
DISTRIBUTION_SUFFIXES = ("_sum", "_count", "_bucket")


# --- the metrics as Terraform declares them ------------------------------------------------


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    return {
        n: b for block in hcl.load(MONITORING)["resource"] for n, b in block.get(kind, {}).items()
    }


def _locals() -> dict[str, Any]:
    return {k: v for block in hcl.load(MONITORING)["locals"] for k, v in block.items()}


def _resolve(text: str, each_key: str | None = None) -> str:
    """The string Terraform would pass: our locals, name_prefix and each.key filled in."""
    text = text.replace(r"\"", '"')
    text = text.replace("${local.ops_filter}", _locals()["ops_filter"].replace(r"\"", '"'))
    text = text.replace("${var.name_prefix}", PREFIX)
    if each_key is not None:
        text = text.replace("${each.key}", each_key)
    assert "${" not in text, f"unresolved interpolation in {text!r}"
    return text


def metrics() -> dict[str, dict[str, Any]]:
    """Every log-based metric by address, for_each expanded, strings resolved."""
    found = {}
    for name, body in _resources("google_logging_metric").items():
        keys = list(_locals()["pool_gauges"]) if body.get("for_each") else [None]
        for key in keys:
            address = f"{name}[{key}]" if key else name
            descriptor = body["metric_descriptor"][0]
            value = body.get("value_extractor")
            found[address] = {
                "name": _resolve(body["name"], key),
                "filter": _resolve(body["filter"], key),
                "value_extractor": value and _resolve(value, key),
                "label_extractors": body.get("label_extractors", {}),
                "labels": [label["key"] for label in descriptor.get("labels", [])],
                "value_type": descriptor["value_type"],
            }
    return found


def promql_name(metric_name: str) -> str:
    """PromQL's name of logging.googleapis.com/user/NAME: first `/` to `:`, the rest to `_`."""
    return "logging_googleapis_com:user_" + re.sub(r"[^A-Za-z0-9_]", "_", metric_name)


def _promql_local(local: str, key: str | None) -> str:
    """The value of `local.promql_X` (or `local.promql_X["key"]`) for name_prefix's default."""
    metric = re.search(r"google_logging_metric\.(\w+)", _locals()[f"promql_{local}"]).group(1)
    return promql_name(metrics()[f"{metric}[{key}]" if key else metric]["name"])


def _fill_promql_locals(text: str) -> str:
    pattern = r'\$\{local\.promql_(\w+)(?:\["(\w+)"\])?\}'
    return re.sub(pattern, lambda m: _promql_local(m.group(1), m.group(2)), text)


# --- a tiny evaluator of the filter forms we use ------------------------------------------

TERM = re.compile(r'^([A-Za-z_][\w.]*)(=|:)"([^"]*)"$')


def _field(entry: dict[str, Any], path: str) -> Any:
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def matches(log_filter: str, entry: dict[str, Any]) -> bool:
    """Whether an entry passes a filter of `path="v"` (equal) / `path:"v"` (has) terms and AND."""
    for term in log_filter.split(" AND "):
        found = TERM.match(term.strip())
        if found is None:
            raise ValueError(f"filter form this evaluator does not know: {term!r}")
        path, operator, wanted = found.groups()
        value = _field(entry, path)
        if value is None:
            return False
        text = str(value)
        if (operator == "=" and text != wanted) or (operator == ":" and wanted not in text):
            return False
    return True


def _extracted(extractor: str, entry: dict[str, Any]) -> Any:
    found = re.fullmatch(r"EXTRACT\(([\w.]+)\)", extractor)
    assert found, f"extractor form not checked here: {extractor}"
    return _field(entry, found.group(1))


# --- the lines the code emits -------------------------------------------------------------


def as_log_entry(line: str, service: str) -> dict[str, Any]:
    """A JSON stdout line of a Cloud Run service as the LogEntry Cloud Logging stores."""
    payload = json.loads(line)
    severity = payload.pop("severity", "DEFAULT")
    payload.pop("time", None)
    for key in [k for k in payload if k.startswith("logging.googleapis.com/")]:
        payload.pop(key)
    resource = {"type": "cloud_run_revision", "labels": {"service_name": service}}
    return {"resource": resource, "severity": severity, "jsonPayload": payload}


def _complete_a_booted_job() -> None:
    deps, clock = fake_completion_deps("signals-b", "outputs-b")
    deps = dataclasses.replace(deps, price_of=lambda job: ("l4", 0.72))
    start = clock.now()
    deps.store.create_job(make_job("j1", start, JobState.RUNNING))
    deps.store.put_vm(lease_record("gpu-1", "j1", start), None)
    at = [start + timedelta(seconds=s) for s in (40, 55, 60, 70, 75, 90)]
    phases = JobPhases(
        guest_booted_at=at[0],
        agent_up_at=at[1],
        claimed_at=at[2],
        comfyui_ready_at=at[3],
        first_step_at=at[4],
        done_at=at[5],
    )
    clock.advance(95)
    done = manifest("j1", clock.now(), outputs=[("a.png", b"png")]).model_copy(
        update={"phases": phases}
    )
    body = done.model_dump_json().encode()
    generation = deps.blobs.write("signals-b", "jobs/j1/done.json", body, "application/json")
    outcome = handle_done_flag(deps, StorageObject("signals-b", "jobs/j1/done.json", generation))
    assert outcome["outcome"] == "completed"


def _reap_a_late_job_and_a_stray_vm() -> None:
    from comfyburst.domain.reaper import ReaperPolicy

    clock, store, fleet = FixedClock(), InMemoryJobStore(), FakeFleet([("gpu-1", "zone-a")])
    store.create_job(make_job("late", clock.now(), timeout_s=60))
    fleet.start("zone-a", "gpu-1", "r")  # RUNNING, and no lease holds it
    deps = ReaperDeps(store, fleet, InMemoryPublisher(), clock)
    policy = ReaperPolicy(boot_timeout_s=10, heartbeat_timeout_s=10, max_attempts=2)
    run_reaper(deps, policy, clock.now() + timedelta(seconds=120))


@pytest.fixture(scope="module")
def emitted() -> list[dict[str, Any]]:
    """Log entries of one completion (on-done-flag) and one reaper period (reaper)."""
    handler = _Capture()
    logger = logging.getLogger()
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        _complete_a_booted_job()
        done_flag = handler.drain(f"{PREFIX}-on-done-flag")
        _reap_a_late_job_and_a_stray_vm()
        reaper = handler.drain(f"{PREFIX}-reaper")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return done_flag + reaper


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def drain(self, service: str) -> list[dict[str, Any]]:
        entries = [as_log_entry(line, service) for line in self.lines]
        self.lines = []
        return entries


def _events(entries, event):
    return [e["jsonPayload"] for e in entries if e["jsonPayload"].get("event") == event]


def test_the_code_emits_the_lines_the_metrics_read(emitted):
    (succeeded, timed_out) = _events(emitted, "job_ended")
    assert (succeeded["state"], succeeded["gpu_class"]) == ("succeeded", "l4")
    assert succeeded["cost_usd"] == pytest.approx(succeeded["billed_s"] * 0.72 / 3600, abs=1e-6)
    assert succeeded["billed_s"] > 0
    assert timed_out["state"] == "timed_out"
    phases = {p["phase"]: p["seconds"] for p in _events(emitted, "job_phase")}
    assert phases["guest_boot"] == 40.0 and phases["run"] == 15.0
    (pool,) = _events(emitted, "pool_gauges")
    assert pool["gpu_class"] == "default"
    assert (pool["queued"], pool["past_deadline"]) == (1, 1)
    assert (pool["running_vms"], pool["unleased_running_vms"]) == (1, 1)


@pytest.mark.parametrize("address", sorted(metrics()))
def test_each_metric_filter_matches_an_emitted_line_and_its_extractors_find_fields(
    emitted, address
):
    metric = metrics()[address]
    hits = [e for e in emitted if matches(metric["filter"], e)]
    assert hits, f"{address}: {metric['filter']} matches no line the code emits"
    assert set(metric["label_extractors"]) == set(metric["labels"]), address
    for entry in hits:
        for label, extractor in metric["label_extractors"].items():
            value = _extracted(extractor, entry)
            assert isinstance(value, str) and value, (address, label, entry)
        if metric["value_type"] == "DISTRIBUTION":
            value = _extracted(metric["value_extractor"], entry)
            assert isinstance(value, int | float) and not isinstance(value, bool), (address, entry)
        else:
            assert metric["value_extractor"] is None, address
    # Each filter selects one kind of line: none of the other events pass it.
    kinds = {e["jsonPayload"]["event"] for e in hits}
    assert len(kinds) == 1, (address, kinds)


def test_the_evaluator_refuses_forms_it_does_not_know_and_tells_apart_what_it_does():
    entry = as_log_entry(json.dumps({"severity": "INFO", "event": "x"}), "comfyburst-api")
    assert matches('jsonPayload.event="x"', entry)
    assert not matches('jsonPayload.event="y"', entry)
    assert matches('resource.labels.service_name:"comfyburst-"', entry)
    assert not matches('jsonPayload.missing="x"', entry)
    with pytest.raises(ValueError, match="does not know"):
        matches('jsonPayload.event="x" OR severity>=ERROR', entry)
    assert "severity" not in entry["jsonPayload"] and entry["severity"] == "INFO"


# --- the dashboard and the alerts ----------------------------------------------------------


def template_args() -> dict[str, str]:
    """The templatefile() arguments of the dashboard, resolved for name_prefix's default."""
    call = _resources("google_monitoring_dashboard")["ops"]["dashboard_json"]
    args = dict(re.findall(r"(\w+)\s*=\s*(\"[^\"]*\"|local\.promql_\w+(?:\[\"\w+\"\])?)", call))
    resolved = {}
    for name, expression in args.items():
        if expression.startswith('"'):
            resolved[name] = _resolve(expression.strip('"'))
        else:
            resolved[name] = _fill_promql_locals("${" + expression + "}")
    return resolved


def dashboard() -> dict[str, Any]:
    """The dashboard JSON Terraform would send."""
    text = TEMPLATE.read_text(encoding="utf-8")
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))
    args = template_args()
    assert placeholders == set(args), (placeholders, set(args))
    return json.loads(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text))


def _check_promql(query: str) -> list[str]:
    """Metric names a PromQL query reads; each must be a defined metric (suffix by kind)."""
    by_name = {promql_name(m["name"]): m for m in metrics().values()}
    names = PROMQL_NAME.findall(query)
    for token in names:
        if token in by_name:
            assert by_name[token]["value_type"] != "DISTRIBUTION", f"{token}: needs a suffix"
            continue
        base = next((token[: -len(s)] for s in DISTRIBUTION_SUFFIXES if token.endswith(s)), None)
        assert base in by_name, f"{token} is no metric of monitoring.tf"
        assert by_name[base]["value_type"] == "DISTRIBUTION", token
    return names


def test_the_dashboard_is_valid_json_whose_tiles_fit_and_read_only_our_metrics():
    board = dashboard()
    layout = board["mosaicLayout"]
    cells: set[tuple[int, int]] = set()
    read = set()
    for tile in layout["tiles"]:
        assert tile["xPos"] + tile["width"] <= layout["columns"], tile["widget"]["title"]
        own = {
            (x, y)
            for x in range(tile["xPos"], tile["xPos"] + tile["width"])
            for y in range(tile["yPos"], tile["yPos"] + tile["height"])
        }
        assert not own & cells, f"{tile['widget']['title']} overlaps another tile"
        cells |= own
        for data_set in tile["widget"]["xyChart"]["dataSets"]:
            read |= set(_check_promql(data_set["timeSeriesQuery"]["prometheusQuery"]))
    bases = {re.sub(r"_(sum|count|bucket)$", "", n) for n in read}
    assert bases == {promql_name(m["name"]) for m in metrics().values()}, "a metric is not shown"


def test_each_alert_reads_a_defined_metric_and_says_what_to_do():
    policies = _resources("google_monitoring_alert_policy")
    assert set(policies) == {"job_past_deadline", "vm_without_job"}
    operations = OPERATIONS.read_text(encoding="utf-8")
    for name, body in policies.items():
        (condition,) = body["conditions"]
        (promql,) = condition["condition_prometheus_query_language"]
        assert _check_promql(_fill_promql_locals(promql["query"])), name
        assert promql["duration"].startswith("${var.") and promql["duration"].endswith("s")
        content = body["documentation"][0]["content"]
        heading = re.search(r'OPERATIONS\.md, \\?"([^"\\]+)\\?"', content).group(1)
        assert f"### {heading}" in operations, f"{name}: docs/OPERATIONS.md lacks {heading!r}"


def render_layout(board: dict[str, Any]) -> str:
    """The dashboard's tiles as a text grid (3 characters per 2 layout columns)."""
    columns = board["mosaicLayout"]["columns"]
    rows: dict[int, list[dict[str, Any]]] = {}
    for tile in board["mosaicLayout"]["tiles"]:
        rows.setdefault(tile["yPos"], []).append(tile)
    rule = "+" + "-" * (columns * 3 // 2 - 1) + "+"
    out = [rule]
    for y in sorted(rows):
        tiles = sorted(rows[y], key=lambda t: t["xPos"])
        assert sum(t["width"] for t in tiles) == columns, f"row {y} leaves a gap"
        wrapped = [
            textwrap.wrap(t["widget"]["title"], t["width"] * 3 // 2 - 3) + [""] * 2 for t in tiles
        ]
        for line in range(2):
            cells = [
                " " + lines[line].ljust(t["width"] * 3 // 2 - 3) + " "
                for t, lines in zip(tiles, wrapped, strict=True)
            ]
            out.append("|" + "|".join(cells) + "|")
        out.append(rule)
    return "\n".join(out)


def test_operations_md_shows_the_dashboard_layout():
    rendering = render_layout(dashboard())
    assert rendering in OPERATIONS.read_text(encoding="utf-8"), (
        "docs/OPERATIONS.md's layout differs from the dashboard; paste:\n" + rendering
    )


def test_monitoring_tf_is_in_the_schema_and_checkov_runs():
    # The schema check (test_deploy_schema.py) and checkov (test_deploy_tools.py) walk every
    # .tf file under terraform/: monitoring.tf is among them, with its resource types' schemas.
    assert MONITORING in hcl.files(hcl.TERRAFORM, ".tf")
    from tests.deploy import provider_schema

    google = provider_schema.extract()["providers"]["google"]["resources"]
    for kind in ("google_logging_metric", "google_monitoring_dashboard"):
        assert kind in google
    assert not provider_schema.check_file(Path(MONITORING))
