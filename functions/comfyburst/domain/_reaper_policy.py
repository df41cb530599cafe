"""The reaper's vocabulary: Compute statuses it acts on, the drain lease's id, and its
thresholds (`ReaperPolicy`). Split from `domain/reaper.py` (which re-exports all of it) so the
planner reads alone; the worker imports the drain lease's prefix from there too."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from comfyburst.domain.caller_limits import CallerLimits
from comfyburst.domain.fair_share import DispatchOrder
from comfyburst.domain.gpu_classes import GpuClasses
from comfyburst.domain.scheduling import STOCKOUT_REASONS

# Start-operation errors after which the VM's zone has no capacity for a while.
STOCKOUT_CODES = STOCKOUT_REASONS
# Statuses in which a VM bills (or is about to) and can be stopped.
UP_STATUSES = frozenset({"PROVISIONING", "STAGING", "RUNNING"})
# Statuses of a VM on its way up; one that stays in them past the boot timeout is hung.
BOOTING_STATUSES = frozenset({"PROVISIONING", "STAGING"})
# Statuses in which no worker runs on the VM.
DOWN_STATUSES = frozenset({"TERMINATED", "STOPPED", "SUSPENDED", "SUSPENDING", "STOPPING"})
# A worker that drains after its job holds its VM's lease as `drain:{vm_name}` (no job has
# that id); the lease is live until it expires, never a lease to a missing job.
DRAIN_LEASE_PREFIX = "drain:"
# A VM whose start Compute accepted leaves TERMINATED within seconds; one still TERMINATED
# this long after its job was dispatched did not start.
START_TAKES_S = 60.0


def is_drain_lease(job_id: str) -> bool:
    """The lease is a draining worker's hold on its VM, not a job's."""
    return job_id.startswith(DRAIN_LEASE_PREFIX)


@dataclass(frozen=True)
class ReaperPolicy:
    """Thresholds, in seconds, from the deployment's settings."""

    boot_timeout_s: float
    heartbeat_timeout_s: float
    max_attempts: int
    stockout_cooldown_s: float = 300.0
    drain_grace_s: float = 30.0
    # A queued job younger than this (since it entered `queued`) is left to whoever queued it
    # (a draining worker polls the queue far more often); the reaper starting a VM for it too
    # would lease and start a second VM only to stop it again.
    dispatch_grace_s: float = 10.0
    # How long a lease lasts when written; with it the planner knows when a lease was taken.
    lease_ttl_s: float = 900.0
    # The deployment's GPU classes: queued jobs of a class that may create a VM (or replace a
    # stopped one in a stocked-out zone) are dispatched beyond the free VMs. None: free only.
    classes: GpuClasses | None = None
    # Per-caller limits: a caller at its `max_running` has its queued jobs wait. None: none.
    caller_limits: CallerLimits | None = None
    # Which queued job of a class goes first (domain/fair_share.py): fair share, or fifo.
    dispatch_order: DispatchOrder = DispatchOrder.FAIR


def age_s(since: datetime | None, now: datetime) -> float | None:
    """Seconds from `since` to `now` (None: not known)."""
    return None if since is None else (now - since).total_seconds()
