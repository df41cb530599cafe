"""Pruning the pool: delete stopped VMs the dispatcher created that are unused or unknown.

The plan is pure (`domain.scheduling.vms_to_delete`; a replacement after a stockout:
`domain.scheduling.stockout_replacement`). Each VM is first leased to `delete:{name}` with a
precondition (a VM whose document is gone gets a new document holding that lease), so no
dispatcher can start it while it is being deleted; then it is deleted with a request id derived
from its name, and its slot in its class's reservation document is released
(services/_create.py). Only VMs carrying the dispatcher's own label are touched: a
pool of VMs made by other means is never deleted. A VM with a live lease is never deleted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from comfyburst.domain import gpu_classes, scheduling
from comfyburst.errors import NotFound, PreconditionFailed
from comfyburst.ports import Fleet, JobStore, VmStatus
from comfyburst.schema import Lease, VmRecord

logger = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("0b9d7a52-2a53-4d0e-9a1c-5e1f7c3d8a44")
# Long enough for a delete to finish; the lease blocks dispatchers meanwhile.
_DELETE_LEASE_S = 600
DELETED_PREFIX = "operation "  # an outcome of `retire_vm` whose delete Compute accepted


def prune_pool(
    store: JobStore, fleet: Fleet, now: datetime, idle_delete_days: float
) -> list[dict[str, Any]]:
    """Delete what `vms_to_delete` names; one summary entry per VM."""
    statuses = fleet.list()
    records = {r.name: r for r in store.list_vms()}
    done: list[dict[str, Any]] = []
    for status, why in scheduling.vms_to_delete(statuses, records, now, idle_delete_days):
        entry: dict[str, Any] = {"vm": status.name, "zone": status.zone, "why": why}
        entry["outcome"] = retire_vm(store, fleet, status, now, why, _changed_since(records))
        done.append(entry)
    return done


def retire_vm(
    store: JobStore,
    fleet: Fleet,
    status: VmStatus,
    now: datetime,
    why: str,
    changed: Callable[[VmRecord | None], bool] | None = None,
    check_stopped: bool = False,
) -> str:
    """Lease the VM to its deletion, delete it, release its slot; the outcome ("operation …",
    "already gone", "skipped: …", "failed: …").

    A VM whose document holds a live lease, or that `changed` says moved on since the plan
    read it, is left. With `check_stopped` its status is read again once the lease is held:
    a VM that is not TERMINATED (started behind the plan's back) is left, its lease given back.
    """
    record, version = store.get_vm(status.name)
    if record is not None and record.is_leased(now):
        return "skipped: leased"
    if changed is not None and changed(record):
        return "skipped: its document changed"
    lease = Lease(
        job_id=f"{scheduling.DELETE_LEASE_PREFIX}{status.name}",
        expires_at=now + timedelta(seconds=_DELETE_LEASE_S),
    )
    base = record or VmRecord(name=status.name, zone=status.zone)
    try:
        held = store.put_vm(base.model_copy(update={"lease": lease}), version)
    except PreconditionFailed:
        return "skipped: leased meanwhile"
    if check_stopped:
        try:
            current = fleet.get(status.zone, status.name)
        except NotFound:
            current = None
        except Exception as exc:  # unknown state: give the VM back rather than hold it
            logger.warning("reading %s before its delete failed", status.name, exc_info=True)
            _give_back(store, base, held, status.name)
            return f"failed: {type(exc).__name__}"
        if current is None:
            _release_slot(store, status)
            return "already gone"
        if current.status != "TERMINATED":
            _give_back(store, base, held, status.name)
            return f"skipped: it is {current.status}"
    request_id = str(uuid.uuid5(_NAMESPACE, f"{status.zone}/{status.name}/delete"))
    try:
        outcome = f"{DELETED_PREFIX}{fleet.delete(status.zone, status.name, request_id)}"
    except NotFound:
        outcome = "already gone"
    except Exception as exc:  # the next period tries again; the VM is free meanwhile
        logger.warning("deleting %s failed", status.name, exc_info=True)
        _give_back(store, base, held, status.name)
        return f"failed: {type(exc).__name__}"
    _release_slot(store, status)
    logger.info("pool VM deleted: %s", why, extra={"vm": status.name, "zone": status.zone})
    return outcome


def _give_back(store: JobStore, base: VmRecord, held: Any, name: str) -> None:
    """The VM's document as it was before the delete lease, if nobody changed it since."""
    try:
        store.put_vm(base, held)
    except PreconditionFailed:  # changed again: the delete lease expires by itself
        logger.warning("giving back the delete lease of %s lost", name)


def _changed_since(records: dict[str, VmRecord]) -> Callable[[VmRecord | None], bool]:
    """Whether a VM's document differs from the one the plan read (a missing one never does)."""
    return lambda record: record is not None and record != records.get(record.name)


def _release_slot(store: JobStore, status: VmStatus) -> None:
    """The deleted VM's slot back to its class (only created VMs, labelled, hold one)."""
    gpu_class = status.labels.get(gpu_classes.CLASS_LABEL)
    if not gpu_class:
        return
    try:
        store.release_slot(gpu_class, status.name)
    except Exception:  # a reservation of a VM Compute no longer lists ages out anyway
        logger.warning("releasing the slot of %s failed", status.name, exc_info=True)
