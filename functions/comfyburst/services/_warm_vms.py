"""The reaper's warm actions (domain/_reaper_warm.py) applied: each VM's lease is written under
the precondition of the version read, then Compute is asked; one that lost a race is skipped."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from comfyburst.domain._reaper_warm import STOP_LEASE_PREFIX, STOP_LEASE_S
from comfyburst.domain.reaper import DRAIN_LEASE_PREFIX
from comfyburst.domain.reaper_actions import StartWarmVm, StopWarmVm
from comfyburst.errors import PreconditionFailed
from comfyburst.ports import Fleet, JobStore
from comfyburst.schema import Lease, VmRecord
from comfyburst.services._placement import METADATA_CONFIG_KEY

log = logging.getLogger(__name__)


class WarmSkipped(Exception):
    """The VM changed since the plan (a job or a worker took it): left as it is."""


def apply_warm(
    store: JobStore,
    fleet: Fleet,
    action: StartWarmVm | StopWarmVm,
    now: datetime,
    request_id: str,
    config_json: str = "",
) -> str:
    """Start or stop one warm VM; the outcome's detail (WarmSkipped: not applied).
    `config_json`: the deployment config a started VM's worker must read (its warm schedule)."""
    if isinstance(action, StartWarmVm):
        return _start(store, fleet, action, now, request_id, config_json)
    return _stop(store, fleet, action, now, request_id)


def _start(
    store: JobStore,
    fleet: Fleet,
    action: StartWarmVm,
    now: datetime,
    request_id: str,
    config_json: str,
) -> str:
    """Lease the VM to its drain marker (its worker holds that lease when it boots with no
    job and drains), bring its config up to date (a VM stopped before the schedule existed
    would power off after its grace, and be started again, period after period), then start
    it; a write or start refused gives the lease back."""
    record, version = store.get_vm(action.name)
    if record is not None and record.is_leased(now):
        raise WarmSkipped("leased meanwhile")
    base = record or VmRecord(name=action.name, zone=action.zone)
    lease = Lease(job_id=f"{DRAIN_LEASE_PREFIX}{action.name}", expires_at=action.lease_until)
    try:
        held = store.put_vm(base.model_copy(update={"lease": lease}), version)
    except PreconditionFailed:
        raise WarmSkipped("VM document changed") from None
    try:
        _write_config(fleet, action, config_json, request_id)
        operation = fleet.start(action.zone, action.name, request_id)
    except Exception:
        try:
            store.put_vm(base, held)
        except PreconditionFailed:  # changed again: the lease expires by itself
            log.info("lease of %s changed after its warm start failed", action.name)
        raise
    return f"operation {operation}"


def _write_config(fleet: Fleet, action: StartWarmVm, config_json: str, request_id: str) -> None:
    if not config_json:
        return
    status = fleet.get(action.zone, action.name)
    if status.metadata.get(METADATA_CONFIG_KEY) == config_json:
        return
    items = {METADATA_CONFIG_KEY: config_json}
    fleet.set_metadata(action.zone, action.name, items, status.fingerprint, f"{request_id}-config")


def _stop(store: JobStore, fleet: Fleet, action: StopWarmVm, now: datetime, request_id: str) -> str:
    """Swap the warm lease for the stop marker (its worker then claims nothing more and powers
    off), then stop the VM."""
    record, version = store.get_vm(action.name)
    lease = record.lease if record is not None else None
    if record is None or lease is None or lease.job_id != action.warm_lease:
        raise WarmSkipped("no longer warm (a job or a drain holds it)")
    marker = Lease(
        job_id=f"{STOP_LEASE_PREFIX}{action.name}",
        expires_at=now + timedelta(seconds=STOP_LEASE_S),
    )
    try:
        store.put_vm(record.model_copy(update={"lease": marker}), version)
    except PreconditionFailed:
        raise WarmSkipped("VM document changed") from None
    return f"operation {fleet.stop(action.zone, action.name, request_id)}"
