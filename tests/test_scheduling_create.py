"""The pure rules of creating pool VMs: zone order, limits, cooldowns, names."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from comfyburst.domain.scheduling import (
    PoolLimits,
    ZoneState,
    create_zones,
    vm_name,
    zone_cooldown_until,
)
from comfyburst.ports import VmStatus

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ZONES = ["us-central1-a", "us-central1-b", "europe-west4-a"]
ROOMY = PoolLimits(max_vms=10, max_vms_per_zone=2)


def vms(*zones: str) -> list[VmStatus]:
    return [VmStatus(name=f"vm-{i}", zone=z, status="TERMINATED") for i, z in enumerate(zones)]


def test_deployment_order_then_recent_capacity_then_fewer_vms() -> None:
    assert create_zones(ZONES, [], {}, ROOMY, NOW) == ZONES
    recent = {"europe-west4-a": ZoneState(capacity_at=NOW - timedelta(seconds=5))}
    assert create_zones(ZONES, [], recent, ROOMY, NOW)[0] == "europe-west4-a"
    assert create_zones(ZONES, vms("us-central1-a"), {}, ROOMY, NOW) == [
        "us-central1-b",
        "europe-west4-a",
        "us-central1-a",
    ]


def test_cooling_zones_are_skipped_unless_compute_names_them() -> None:
    cooling = {"us-central1-a": ZoneState(cooldown_until=NOW + timedelta(seconds=60))}
    assert "us-central1-a" not in create_zones(ZONES, [], cooling, ROOMY, NOW)
    expired = {"us-central1-a": ZoneState(cooldown_until=NOW - timedelta(seconds=1))}
    assert create_zones(ZONES, [], expired, ROOMY, NOW)[0] == "us-central1-a"
    suggested = create_zones(ZONES, [], cooling, ROOMY, NOW, suggested=["us-central1-a"])
    assert suggested[0] == "us-central1-a"
    assert create_zones(ZONES, [], {}, ROOMY, NOW, avoid=["us-central1-a"])[0] == "us-central1-b"


def test_limits_per_zone_and_in_all() -> None:
    full_a = vms("us-central1-a", "us-central1-a")
    assert "us-central1-a" not in create_zones(ZONES, full_a, {}, ROOMY, NOW)
    assert create_zones(ZONES, full_a, {}, PoolLimits(2, 2), NOW) == []
    assert create_zones(ZONES, [], {}, PoolLimits(0, 2), NOW) == []


def test_stockout_and_quota_cool_a_zone_down_other_errors_do_not() -> None:
    for reason in ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "QUOTA_EXCEEDED"):
        assert zone_cooldown_until(reason, NOW, 300) == NOW + timedelta(seconds=300)
    assert zone_cooldown_until("INTERNAL_ERROR", NOW, 300) is None


def test_vm_names_are_stable_valid_and_distinct() -> None:
    name = vm_name("comfyburst-gpu", "job-1", 1, "us-central1-a")
    assert name == vm_name("comfyburst-gpu", "job-1", 1, "us-central1-a")
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name)
    others = {
        vm_name("comfyburst-gpu", "job-1", 2, "us-central1-a"),
        vm_name("comfyburst-gpu", "job-1", 1, "us-central1-b"),
        vm_name("comfyburst-gpu", "job-2", 1, "us-central1-a"),
    }
    assert name not in others and len(others) == 3
    assert len(vm_name("x" * 80, "job-1", 1, "us-central1-a")) <= 63


def test_only_stopped_vms_the_dispatcher_made_are_deleted() -> None:
    from comfyburst.domain.scheduling import vms_to_delete
    from comfyburst.schema import Lease, VmRecord

    made = {"comfyburst-origin": "dispatcher"}

    def vm(name: str, status: str = "TERMINATED", labels: dict | None = None) -> VmStatus:
        return VmStatus(
            name=name, zone="z", status=status, labels=made if labels is None else labels
        )

    old, fresh = NOW - timedelta(days=20), NOW - timedelta(days=2)
    lease = Lease(job_id="j", expires_at=NOW + timedelta(minutes=5))
    records = {
        "old": VmRecord(name="old", zone="z", last_seen=old),
        "fresh": VmRecord(name="fresh", zone="z", last_seen=fresh),
        "leased": VmRecord(name="leased", zone="z", last_seen=old, lease=lease),
        "running": VmRecord(name="running", zone="z", last_seen=old),
        "never": VmRecord(name="never", zone="z"),
    }
    fleet = [
        vm("old"),
        vm("fresh"),
        vm("leased"),
        vm("running", status="RUNNING"),
        vm("never"),
        vm("orphan"),
        vm("foreign", labels={}),
    ]
    found = {status.name: why for status, why in vms_to_delete(fleet, records, NOW, 14)}
    assert found == {"old": "unused for 14 days", "orphan": "no vms/ document knows it"}
