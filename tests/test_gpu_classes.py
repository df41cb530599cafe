"""GPU classes: the declaration's checks at settings load and the pure rules over classes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from comfyburst.domain import gpu_classes
from comfyburst.domain.gpu_classes import GpuClass, GpuClasses
from comfyburst.domain.request_policy import RequestPolicy, check_request
from comfyburst.errors import InvalidRequest
from comfyburst.schema import JobOptions, JobRequest
from comfyburst.settings import FunctionSettings

BASE = {
    "project_id": "p",
    "jobs_bucket": "j",
    "outputs_bucket": "o",
    "signals_bucket": "s",
    "results_topic": "t",
}
SPOT = {
    "name": "l4-spot",
    "machine_type": "g2-standard-8",
    "accelerator_type": "nvidia-l4",
    "accelerator_count": 1,
    "disk_gb": 200,
    "spot": True,
    "zones": ["us-central1-a", "us-east4-c"],
    "price_per_hour": 0.2867,
    "templates": {
        "us-central1": "projects/P/regions/us-central1/instanceTemplates/spot-c1",
        "us-east4": "projects/P/regions/us-east4/instanceTemplates/spot-e4",
    },
    "max_vms": 8,
    "max_vms_per_zone": 4,
}
STANDARD = {
    **SPOT,
    "name": "l4",
    "spot": False,
    "zones": ["us-central1-b"],
    "price_per_hour": 0.8536,
    "templates": {"us-central1": "projects/P/regions/us-central1/instanceTemplates/std"},
}


def _settings(monkeypatch: pytest.MonkeyPatch, **env: object) -> FunctionSettings:
    for key, value in env.items():
        text = value if isinstance(value, str) else json.dumps(value)
        monkeypatch.setenv(f"COMFYBURST_{key.upper()}", text)
    return FunctionSettings(**BASE)  # type: ignore[arg-type]


def test_declared_classes_load_with_default_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, gpu_classes=[SPOT, STANDARD], preemption_fallback_class="l4")
    classes = settings.gpu_class_set()
    assert classes.names == ["l4-spot", "l4"]
    assert classes.default == "l4-spot"  # the first, when none is named
    assert classes.fallback == "l4"
    assert settings.fleet_zones() == ["us-central1-a", "us-east4-c", "us-central1-b"]
    config = settings.deployment_config()
    assert (config.default_gpu_class, config.preemption_fallback_class) == ("l4-spot", "l4")
    got = classes.get("l4-spot")
    assert got is not None
    assert got.template_for("us-east4-c") == SPOT["templates"]["us-east4"]  # type: ignore[index]
    assert got.template_for("europe-west4-a") is None


def test_no_classes_derive_default_from_pool_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        monkeypatch,
        pool_zones="us-central1-a,us-east4-c",
        pool_template="tpl",
        pool_max_vms="5",
        pool_max_vms_per_zone="2",
    )
    classes = settings.gpu_class_set()
    assert classes.names == ["default"] and classes.default == "default"
    only = classes.classes[0]
    assert only.zones == ["us-central1-a", "us-east4-c"]
    assert only.template_for("us-east4-c") == "tpl"
    assert (only.max_vms, only.max_vms_per_zone) == (5, 2)
    assert classes.fallback is None


def test_derived_class_without_template_creates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    only = _settings(monkeypatch, pool_zones="us-central1-a").gpu_class_set().classes[0]
    assert not only.creates and only.template_for("us-central1-a") is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"gpu_classes": [SPOT, SPOT]}, "duplicate names: l4-spot"),
        (
            {"gpu_classes": [{**SPOT, "templates": {"us-central1": "t"}}]},
            "zones in us-east4 but no template",
        ),
        ({"gpu_classes": [{**SPOT, "zones": []}]}, "has no zones"),
        ({"gpu_classes": [SPOT], "preemption_fallback_class": "a100"}, "'a100' is not a class"),
        (
            {"gpu_classes": [SPOT, STANDARD], "preemption_fallback_class": "l4-spot"},
            "is a Spot class",
        ),
        ({"gpu_classes": [SPOT], "default_gpu_class": "l4"}, "default_gpu_class 'l4'"),
        ({"gpu_classes": [{**SPOT, "name": "L4 Spot"}]}, "String should match pattern"),
        ({"gpu_classes": [{**SPOT, "gpus": 2}]}, "Extra inputs are not permitted"),
    ],
)
def test_wrong_declarations_fail_at_load_clearly(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, object], message: str
) -> None:
    monkeypatch.setenv("COMFYBURST_WEBHOOK_SECRET", "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0")
    with pytest.raises(ValidationError) as caught:
        _settings(monkeypatch, **env)
    assert message in str(caught.value)
    assert "whsec_" not in str(caught.value)  # an error never echoes the settings' secrets


def _classes(fallback: str | None = "l4") -> GpuClasses:
    return gpu_classes.build([GpuClass(**SPOT), GpuClass(**STANDARD)], None, fallback)


def test_vm_and_job_class_default_when_unnamed() -> None:
    classes = _classes()
    assert classes.of_vm({}) == "l4-spot"
    assert classes.of_vm({gpu_classes.CLASS_LABEL: "l4"}) == "l4"
    assert classes.of_job(None) == "l4-spot" and classes.of_job("l4") == "l4"


def test_fallback_only_at_the_cap_from_a_spot_class() -> None:
    classes = _classes()
    assert classes.fallback_after("l4-spot", 2, 3) is None
    assert classes.fallback_after("l4-spot", 3, 3) == "l4"
    assert classes.fallback_after(None, 4, 3) == "l4"  # the default is the Spot class
    assert classes.fallback_after("l4", 5, 3) is None  # already standard
    assert _classes(fallback=None).fallback_after("l4-spot", 9, 3) is None


def test_listing_shows_no_templates_or_project() -> None:
    listing = _classes().listing()
    assert [c.name for c in listing.gpu_classes] == ["l4-spot", "l4"]
    assert listing.gpu_classes[0].default and not listing.gpu_classes[1].default
    assert listing.gpu_classes[0].regions == ["us-central1", "us-east4"]
    assert listing.preemption_fallback == "l4"
    text = listing.model_dump_json()
    assert "instanceTemplates" not in text and "projects/" not in text


def _request(gpu_class: str | None) -> JobRequest:
    return JobRequest(
        workflow={"1": {"class_type": "SaveImage", "inputs": {}}},  # type: ignore[dict-item]
        options=JobOptions(gpu_class=gpu_class),
    )


def test_unknown_class_is_refused_naming_the_field_and_the_classes() -> None:
    policy = RequestPolicy(model_hosts=(), gpu_classes=_classes())
    check_request(_request("l4"), policy)
    check_request(_request(None), policy)
    with pytest.raises(InvalidRequest) as caught:
        check_request(_request("a100"), policy)
    body = caught.value.to_body()["error"]
    assert body["field"] == "options.gpu_class"
    assert body["details"] == {"gpu_classes": ["l4-spot", "l4"]}


def test_class_name_shape_is_checked_by_the_schema() -> None:
    with pytest.raises(ValidationError):
        JobOptions(gpu_class="../etc")


def test_a_zone_refused_for_one_class_cools_down_for_that_class_only() -> None:
    """A stockout or quota error is about one machine and accelerator type: the zone cools down
    for the class that met it; another class still creates there first."""
    from datetime import UTC, datetime, timedelta

    from comfyburst.domain.scheduling import PoolLimits, create_zones
    from comfyburst.services._fleet_view import FleetView
    from tests.fakes import FakeFleet, InMemoryJobStore

    now = datetime(2026, 1, 1, tzinfo=UTC)
    view = FleetView(FakeFleet([]), InMemoryJobStore())
    view.note_zone_refused("l4", "us-central1-a", now + timedelta(minutes=5))
    zones, limits = ["us-central1-a", "us-central1-b"], PoolLimits(4, 2)
    assert create_zones(zones, [], view.zones("l4"), limits, now) == ["us-central1-b"]
    assert create_zones(zones, [], view.zones("a100"), limits, now) == zones
    view.note_zone_capacity("l4", "us-central1-a", now)
    assert create_zones(zones, [], view.zones("l4"), limits, now)[0] == "us-central1-a"
