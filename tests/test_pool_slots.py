"""The reservation rule a creator's slot follows (domain.scheduling.reserve_slot): pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from comfyburst.domain.scheduling import (
    REASON_POOL_FULL,
    REASON_ZONE_FULL,
    PoolLimits,
    Reservation,
    reserve_slot,
)
from comfyburst.ports import SlotRequest
from tests.fakes import InMemoryJobStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STALE = NOW - timedelta(minutes=2)
A, B = "zone-a", "zone-b"


def test_a_slot_is_reserved_while_below_the_limits() -> None:
    kept, refused = reserve_slot({}, {}, "vm-1", A, PoolLimits(2, 1), NOW, STALE)
    assert refused is None and kept == {"vm-1": Reservation(A, NOW)}


def test_listed_vms_and_reservations_count_once_each() -> None:
    reserved = {"vm-1": Reservation(A, NOW), "vm-2": Reservation(B, NOW)}
    listed = {"vm-1": A, "vm-3": B}  # stopped VMs count too: they exist
    assert reserve_slot(reserved, listed, "vm-4", A, PoolLimits(3, 9), NOW, STALE)[1] == (
        REASON_POOL_FULL
    )
    kept, refused = reserve_slot(reserved, listed, "vm-4", A, PoolLimits(4, 9), NOW, STALE)
    assert refused is None and set(kept) == {"vm-1", "vm-2", "vm-4"}


def test_a_zone_at_its_limit_refuses_while_another_zone_takes_it() -> None:
    reserved = {"vm-1": Reservation(A, NOW)}
    limits = PoolLimits(5, 1)
    assert reserve_slot(reserved, {}, "vm-2", A, limits, NOW, STALE)[1] == REASON_ZONE_FULL
    assert reserve_slot(reserved, {}, "vm-2", B, limits, NOW, STALE)[1] is None


def test_a_retried_create_finds_its_own_slot() -> None:
    reserved = {"vm-1": Reservation(A, NOW)}
    kept, refused = reserve_slot(reserved, {}, "vm-1", A, PoolLimits(1, 1), NOW, STALE)
    assert refused is None and kept == reserved
    # A VM that exists already (listed) is its own retry as well.
    assert reserve_slot({}, {"vm-1": A}, "vm-1", A, PoolLimits(1, 1), NOW, STALE)[1] is None


def test_an_old_unlisted_reservation_is_dropped_a_young_one_kept() -> None:
    old = Reservation(A, STALE - timedelta(seconds=1))
    reserved = {"crashed": old, "young": Reservation(A, NOW), "listed": old}
    kept, refused = reserve_slot(reserved, {"listed": A}, "vm-new", B, PoolLimits(3, 3), NOW, STALE)
    assert refused is None and set(kept) == {"young", "listed", "vm-new"}


def test_the_fake_store_holds_and_releases_slots_per_class() -> None:
    store = InMemoryJobStore()

    def ask(gpu_class: str, name: str) -> str | None:
        return store.reserve_slot(SlotRequest(gpu_class, name, A, 1, 1, {}, NOW, STALE))

    assert ask("l4", "vm-1") is None
    assert ask("l4", "vm-2") == REASON_POOL_FULL
    assert ask("a100", "vm-3") is None  # each class has its own limits
    store.release_slot("l4", "vm-1")
    store.release_slot("l4", "never-reserved")
    assert ask("l4", "vm-2") is None
