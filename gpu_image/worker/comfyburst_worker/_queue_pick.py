"""A draining agent's queued candidates (agent.py): the queued jobs of its VM's class it may
take, ranked as placement ranks VMs for them (cached models, fair share between callers, each
caller's max_running); the agent claims the first few in that order."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from comfyburst.domain import fair_share
from comfyburst.ports import JobStore
from comfyburst.schema import Job, VmRef
from comfyburst.states import JobState
from comfyburst_worker.claims import VmClass, queued_heads, rank_queued, share_of
from comfyburst_worker.job_runner import Services

log = logging.getLogger("comfyburst_worker.agent")

# The agent lists twice this many live jobs (starting and queued) per look at the queue.
CANDIDATES = 20


def ranked_queued(s: Services, vm: VmRef, vm_class: VmClass, listed: list[Job]) -> list[Job]:
    """The queued jobs this VM may claim, best first, from the agent's listing of the oldest
    live jobs (`listed`), its class's own queue when that listing holds none of them, and each
    caller's oldest queued job when the listing is full; empty when there is none."""
    store, clock = s.store, s.clock

    def claimable(jobs: list[Job]) -> list[Job]:
        now = clock.now()
        return [
            j
            for j in jobs
            if j.state is JobState.QUEUED
            and not j.cancel_requested
            and j.deadline_at > now
            and vm_class.takes(j)
        ]

    queued = claimable(listed)
    if not queued and len(listed) >= 2 * CANDIDATES:
        # The oldest live jobs are all starting or of other classes: this class's own queue
        # (jobs record their class at submit), so a busy class never starves this one.
        try:
            queued = claimable(
                store.list_jobs([JobState.QUEUED], CANDIDATES, gpu_class=vm_class.name)
            )
        except Exception as exc:
            log.warning("listing the queue failed: %s", exc)
            return []
    if len(listed) >= 2 * CANDIDATES:
        # A backlog past the listing: each caller's oldest queued job of this class too, so
        # fair share sees a caller whose jobs all queued after the listed ones.
        seen = {j.job_id for j in queued}
        heads = claimable(queued_heads(store, vm_class.name))
        queued += [j for j in heads if j.job_id not in seen]
    if not queued:
        return []
    # The VM's cached models matter only when a candidate brings models.
    needs_models = any(j.request.models for j in queued)
    cached = s.leases.models_cached() if needs_models else set()
    # Fair share between callers, and each caller's max_running (domain/fair_share.py).
    share = share_of(store, queued, s.config.running_limits)
    if share is None:
        return []
    running, max_running = share
    order = s.config.dispatch_order
    served: dict[str | None, datetime] = {}
    if order is fair_share.DispatchOrder.FAIR:
        served = last_served(store, vm_class.name, queued, running, max_running, clock.now())
    return rank_queued(
        queued,
        cached,
        vm.name,
        vm_class=vm_class,
        running=running,
        max_running=max_running,
        dispatch_order=order,
        served=served,
    )


def last_served(
    store: JobStore,
    gpu_class: str,
    queued: list[Job],
    running: Mapping[str | None, int],
    max_running: fair_share.MaxRunning,
    now: datetime,
) -> dict[str | None, datetime]:
    """When each waiting caller was last served in this class (`fair_share.last_served` over
    FirestoreJobStore.last_started); a store without it, or a failed lookup, knows none: ties
    go by age alone."""
    scan = getattr(store, "last_started", None)
    if scan is None:
        return {}
    try:
        return fair_share.last_served(scan, gpu_class, queued, running, now, max_running)
    except Exception as exc:
        log.warning("looking up when each caller was last served failed: %s", exc)
        return {}
