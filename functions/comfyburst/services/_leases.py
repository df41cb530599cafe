"""Conditional lease release shared by the done-flag trigger and the reaper."""

from __future__ import annotations

import logging
from datetime import datetime

from comfyburst.errors import PreconditionFailed
from comfyburst.ports import JobStore

log = logging.getLogger(__name__)


def release_lease(
    store: JobStore, vm_name: str, job_id: str, last_seen: datetime | None = None
) -> bool:
    """Clear `vms/{vm_name}`'s lease if it still belongs to `job_id` (precondition write).

    Returns False when the lease is already gone, belongs to another job, or changed under us:
    in each case someone else owns the VM now and the lease must stay as it is.
    """
    record, version = store.get_vm(vm_name)
    if record is None or record.lease is None or record.lease.job_id != job_id:
        return False
    update: dict[str, object] = {"lease": None}
    if last_seen is not None and (record.last_seen is None or last_seen > record.last_seen):
        update["last_seen"] = last_seen
    try:
        store.put_vm(record.model_copy(update=update), version)
    except PreconditionFailed:
        log.info("lease of %s changed while releasing it for job %s; left as is", vm_name, job_id)
        return False
    return True
