"""The pure rule that frees a stocked-out pool (issue #22 item 6): a stopped VM reserves
nothing, so when none of a class's stopped VMs can start and its limits leave no zone to create
in, the least recently used stopped VM in a stocked-out zone is named for deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from comfyburst.domain.scheduling import (
    CREATED_LABEL,
    DELETE_LEASE_PREFIX,
    PoolLimits,
    ZoneState,
    stockout_replacement,
)
from comfyburst.ports import VmStatus
from comfyburst.schema import Lease, VmRecord
from comfyburst.services.prune import retire_vm
from tests.fakes import FakeFleet, InMemoryJobStore

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
US_A, US_B, EAST = "us-central1-a", "us-central1-b", "us-east4-a"
ZONES = [US_A, US_B, EAST]
FULL_AT_TWO = PoolLimits(max_vms=2, max_vms_per_zone=2)
LATER = NOW + timedelta(seconds=60)
OUT = {US_A: ZoneState(cooldown_until=LATER), US_B: ZoneState(cooldown_until=LATER)}


def stopped(name: str, zone: str = US_A, created: bool = True) -> VmStatus:
    labels = dict([CREATED_LABEL]) if created else {}
    return VmStatus(name=name, zone=zone, status="TERMINATED", labels=labels)


def record(
    name: str,
    zone: str = US_A,
    seen_min_ago: int | None = None,
    cooling: bool = False,
    lease: str | None = None,
) -> VmRecord:
    return VmRecord(
        name=name,
        zone=zone,
        last_seen=None if seen_min_ago is None else NOW - timedelta(minutes=seen_min_ago),
        cooldown_until=LATER if cooling else None,
        lease=None if lease is None else Lease(job_id=lease, expires_at=LATER),
    )


def test_the_least_recently_used_stocked_out_vm_makes_room_where_there_is_capacity() -> None:
    fleet = [stopped("vm-new"), stopped("vm-old", US_B)]
    records = {"vm-new": record("vm-new", seen_min_ago=1), "vm-old": record("vm-old", US_B, 30)}
    found = stockout_replacement(ZONES, fleet, records, OUT, FULL_AT_TWO, NOW)
    assert found is not None
    assert found.vm.name == "vm-old"
    assert found.zones == [EAST]  # the zones that refused are left out


def test_a_vms_own_stockout_cooldown_is_enough_without_this_processes_zone_states() -> None:
    # The reaper's dispatcher never saw the refusal: the VM documents' cooldowns say it.
    fleet = [stopped("vm-0"), stopped("vm-1")]
    records = {name: record(name, cooling=True) for name in ("vm-0", "vm-1")}
    found = stockout_replacement(ZONES, fleet, records, {}, FULL_AT_TWO, NOW, avoid=[US_A])
    assert found is not None and found.zones == [US_B, EAST]


def test_nothing_is_replaced_while_a_stopped_vm_can_start() -> None:
    fleet = [stopped("vm-out"), stopped("vm-free", EAST)]
    assert stockout_replacement(ZONES, fleet, {}, OUT, FULL_AT_TWO, NOW) is None


def test_nothing_is_replaced_while_the_class_can_still_create() -> None:
    fleet = [stopped("vm-0")]
    assert stockout_replacement(ZONES, fleet, {}, OUT, FULL_AT_TWO, NOW) is None


def test_a_vm_with_a_live_lease_is_never_named() -> None:
    fleet = [stopped("vm-0"), stopped("vm-1")]
    records = {
        "vm-0": record("vm-0", lease="job-being-started"),
        "vm-1": record("vm-1", lease="drain:vm-1"),
    }
    assert stockout_replacement(ZONES, fleet, records, OUT, FULL_AT_TWO, NOW) is None
    records["vm-1"] = record("vm-1")  # its lease ended
    found = stockout_replacement(ZONES, fleet, records, OUT, FULL_AT_TWO, NOW)
    assert found is not None and found.vm.name == "vm-1"


def test_one_replacement_at_a_time() -> None:
    deleting = VmStatus(name="vm-0", zone=US_A, status="STOPPING", labels=dict([CREATED_LABEL]))
    fleet = [deleting, stopped("vm-1")]
    records = {"vm-0": record("vm-0", lease=f"{DELETE_LEASE_PREFIX}vm-0")}
    assert stockout_replacement(ZONES, fleet, records, OUT, FULL_AT_TWO, NOW) is None


def test_only_vms_the_dispatcher_created_are_named() -> None:
    fleet = [stopped("vm-0", created=False), stopped("vm-1", created=False)]
    assert stockout_replacement(ZONES, fleet, {}, OUT, FULL_AT_TWO, NOW) is None


def test_no_replacement_without_a_zone_that_would_take_the_new_vm() -> None:
    fleet = [stopped("vm-0"), stopped("vm-1")]
    everywhere = {**OUT, EAST: ZoneState(cooldown_until=LATER)}
    assert stockout_replacement(ZONES, fleet, {}, everywhere, FULL_AT_TWO, NOW) is None
    # A zone Compute named (zonesAvailable) is tried even while this process cools it down.
    found = stockout_replacement(ZONES, fleet, {}, everywhere, FULL_AT_TWO, NOW, suggested=[EAST])
    assert found is not None and found.zones == [EAST]
    # The zone with capacity is at max_vms_per_zone: deleting elsewhere does not help.
    crowded = [*fleet, VmStatus(name="vm-2", zone=EAST, status="RUNNING")]
    assert stockout_replacement(ZONES, crowded, {}, OUT, PoolLimits(3, 1), NOW) is None


def test_the_cooldowns_end_and_the_rule_with_them() -> None:
    fleet = [stopped("vm-0"), stopped("vm-1")]
    records = {name: record(name, cooling=True) for name in ("vm-0", "vm-1")}
    after = LATER + timedelta(seconds=1)
    assert stockout_replacement(ZONES, fleet, records, OUT, FULL_AT_TWO, after) is None


# --- the reaper dispatches the jobs such a replacement (or a create) can serve -----------


def _planned(fleet: list[VmStatus], records: list[VmRecord], classes: bool) -> list[str]:
    from comfyburst.domain import gpu_classes
    from comfyburst.domain.reaper import DispatchJob, ReaperPolicy, plan
    from tests._completion_helpers import make_job

    one_vm = gpu_classes.build(
        [], None, None, pool_template="t", pool_zones=[US_A, EAST], pool_max_vms=1,
        pool_max_vms_per_zone=1,
    )  # fmt: skip
    policy = ReaperPolicy(
        boot_timeout_s=600, heartbeat_timeout_s=120, max_attempts=3,
        classes=one_vm if classes else None,
    )  # fmt: skip
    queued = [make_job(f"job-{i}", NOW - timedelta(minutes=5), vm=None) for i in range(2)]
    actions = plan(queued, records, fleet, NOW, policy)
    return [a.job_id for a in actions if isinstance(a, DispatchJob)]


def test_the_reaper_dispatches_a_job_to_replace_a_vm_pinned_by_a_stockout() -> None:
    fleet = [stopped("vm-0")]
    records = [record("vm-0", cooling=True)]
    assert _planned(fleet, records, classes=False) == []  # before: it waited for vm-0
    assert _planned(fleet, records, classes=True) == ["job-0"]  # one replacement at a time
    # Once vm-0 is gone the class has room to create: one job per VM it may make.
    assert _planned([], [], classes=True) == ["job-0"]
    # A class at max_vms with its VM busy has no room.
    busy = [VmStatus(name="vm-0", zone=US_A, status="RUNNING", labels=dict([CREATED_LABEL]))]
    assert _planned(busy, [record("vm-0", lease="job-x")], classes=True) == []


class _FlakyFleet(FakeFleet):
    """A fleet whose status read or delete fails as Compute's may (a 5xx, a timeout)."""

    def __init__(self, fail: str) -> None:
        super().__init__([("vm-1", US_A)])
        self.fail = fail
        self.deleted: list[str] = []

    def get(self, zone: str, name: str) -> VmStatus:
        if self.fail == "get":
            raise RuntimeError("503 from compute")
        return super().get(zone, name)

    def delete(self, zone: str, name: str, request_id: str) -> str:
        if self.fail == "delete":
            raise RuntimeError("503 from compute")
        self.deleted.append(name)
        return f"op-delete-{name}"


@pytest.mark.parametrize("fail", ["get", "delete"])
def test_a_failed_read_or_delete_gives_the_delete_lease_back(fail: str) -> None:
    """The VM stays usable (no `delete:` lease held for its ten minutes) and nothing is
    deleted; the next pass may try again."""
    store, fleet = InMemoryJobStore(), _FlakyFleet(fail)
    outcome = retire_vm(store, fleet, stopped("vm-1"), NOW, "test", check_stopped=True)
    assert outcome == "failed: RuntimeError"
    held, _ = store.get_vm("vm-1")
    assert held is None or not held.is_leased(NOW)
    assert fleet.deleted == []
