"""The reaper's pure planner: from a snapshot of jobs, leases and the fleet, the actions that make
every job end and every idle GPU stop. No I/O; `now` and the thresholds are parameters.

The actions are plain data (`domain/reaper_actions.py`, re-exported here). VM actions with
`after_job` run only if that job action was applied (a job the worker claimed a moment ago must
keep its VM).

The reaper is also the safety net for done events that are lost or late: a starting/running job
the planner would end (requeue, fail, time out, cancel) is completed from its done flag instead
when `done_flags` says one exists for its current attempt. The planner does no I/O, so the
executor plans twice: once without flags, then, if any of `done_flag_candidates(actions)` has a
flag, again with the attempts it read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from comfyburst.domain._reaper_dispatch import Fleet, dispatches_of
from comfyburst.domain._reaper_policy import (
    BOOTING_STATUSES,
    DOWN_STATUSES,
    DRAIN_LEASE_PREFIX,
    START_TAKES_S,
    STOCKOUT_CODES,
    UP_STATUSES,
    ReaperPolicy,
    age_s,
    is_drain_lease,
)
from comfyburst.domain._reaper_warm import is_warm_lease, warm_lease_id, warm_step
from comfyburst.domain.fair_share import ServedByClass
from comfyburst.domain.jobs import attempts_counted
from comfyburst.domain.reaper_actions import (
    Action,
    CancelJob,
    CompleteFromDoneFlag,
    CooldownVm,
    DispatchJob,
    FailJob,
    JobAction,
    ReleaseLease,
    RequeueJob,
    StopVm,
    TimeOutJob,
    VmAction,
)
from comfyburst.ports import VmStatus
from comfyburst.schema import Job, Lease, VmRecord
from comfyburst.states import JobState

__all__ = [
    "BOOTING_STATUSES",
    "DOWN_STATUSES",
    "DRAIN_LEASE_PREFIX",
    "START_TAKES_S",
    "STOCKOUT_CODES",
    "UP_STATUSES",
    "Action",
    "CancelJob",
    "CompleteFromDoneFlag",
    "CooldownVm",
    "DispatchJob",
    "FailJob",
    "JobAction",
    "ReaperPolicy",
    "ReleaseLease",
    "RequeueJob",
    "StopVm",
    "TimeOutJob",
    "VmAction",
    "done_flag_candidates",
    "is_drain_lease",
    "is_warm_lease",
    "plan",
    "warm_lease_id",
]

# Only a job a worker may have run can have a done flag for its current attempt.
_MAY_HAVE_RUN = (JobState.STARTING, JobState.RUNNING)


def done_flag_candidates(actions: Iterable[Action]) -> list[str]:
    """Ids of the jobs whose done flag must be looked at before `actions` end them."""
    return [
        a.job_id
        for a in actions
        if isinstance(a, RequeueJob | FailJob | TimeOutJob | CancelJob)
        and a.seen_state in _MAY_HAVE_RUN
    ]


class _Planner:
    def __init__(
        self,
        jobs: Iterable[Job],
        vms: Iterable[VmRecord],
        fleet: Iterable[VmStatus],
        now: datetime,
        policy: ReaperPolicy,
        start_errors: Mapping[str, str],
        done_flags: Mapping[str, int],
        served: ServedByClass,
    ) -> None:
        self.jobs = sorted(jobs, key=lambda j: (j.created_at, j.job_id))
        self.by_id = {j.job_id: j for j in self.jobs}
        self.records = {v.name: v for v in vms}
        self.fleet = {s.name: s for s in fleet}
        self.now = now
        self.policy = policy
        self.start_errors = start_errors
        self.done_flags = done_flags
        self.served = served
        self.job_actions: list[JobAction | CompleteFromDoneFlag] = []
        self.vm_actions: list[VmAction] = []
        self.ending: set[str] = set()
        self.stopping: set[str] = set()
        self.releasing: set[str] = set()
        self.cooling: set[str] = set()
        # (index in vm_actions, vm name, ending job id, why)
        self.stops_wanted: list[tuple[int, str, str, str]] = []

    # --- helpers --------------------------------------------------------------------------

    def _status(self, vm_name: str) -> str | None:
        status = self.fleet.get(vm_name)
        return status.status if status else None

    def _end_job(self, action: JobAction, job: Job) -> None:
        """Record a job action and free its VM once it is applied; a job whose done flag for
        this attempt exists is completed from it instead (its VM is the worker's business)."""
        if job.state in _MAY_HAVE_RUN and self.done_flags.get(job.job_id) == job.attempt:
            self.job_actions.append(
                CompleteFromDoneFlag(
                    job.job_id, job.state, job.attempt, f"done flag present; was: {_why(action)}"
                )
            )
            return
        self.job_actions.append(action)
        self.ending.add(job.job_id)
        if job.vm is None:
            return
        name = job.vm.name
        if self._status(name) in UP_STATUSES:
            # Decided once every job is planned: another job may still hold this VM.
            self.stops_wanted.append((len(self.vm_actions), name, job.job_id, _why(action)))
        record = self.records.get(name)
        if record and record.lease and record.lease.job_id == job.job_id:
            self.vm_actions.append(
                ReleaseLease(name, job.job_id, _why(action), after_job=job.job_id)
            )
            self.releasing.add(name)

    def _fault(self, job: Job, reason: str) -> None:
        """An infrastructure fault: retry the job on another VM, or fail it when spent."""
        seen = (job.job_id, job.state, job.attempt)
        if job.cancel_requested:
            self._end_job(CancelJob(*seen, f"cancel requested; {reason}"), job)
            return
        limit = min(job.max_attempts, self.policy.max_attempts)
        if attempts_counted(job) >= limit:  # Spot preemptions (up to a cap) are not attempts
            message = f"{reason}; all {limit} attempts spent"
            self._end_job(FailJob(*seen, "attempts_exhausted", message), job)
        else:
            self._end_job(RequeueJob(*seen, reason), job)

    # --- policies -------------------------------------------------------------------------

    def job_policies(self) -> None:
        for job in self.jobs:
            if job.state.terminal:
                continue
            seen = (job.job_id, job.state, job.attempt)
            if self.now >= job.deadline_at:
                message = (
                    f"deadline {job.deadline_at.isoformat()} passed in state {job.state.value}"
                )
                self._end_job(TimeOutJob(*seen, message), job)
            elif job.state is JobState.QUEUED:
                if job.cancel_requested:
                    self._end_job(CancelJob(*seen, "cancel requested while queued"), job)
            else:
                self._live_job(job)

    def stop_vms_of_ended_jobs(self) -> None:
        """Stop the VMs of the jobs being ended, unless another job or a drain holds them."""
        inserted = 0
        for index, name, job_id, why in self.stops_wanted:
            if name in self.stopping or self._held_by_other(name, job_id):
                continue
            stop = StopVm(name, self.fleet[name].zone, f"job {job_id}: {why}", after_job=job_id)
            # Where it was wanted: before that job's lease release, as ever.
            self.vm_actions.insert(index + inserted, stop)
            inserted += 1
            self.stopping.add(name)

    def _held_by_other(self, name: str, job_id: str) -> bool:
        """Another live job (not being ended) names the VM, or a live lease of another job or
        of a draining worker holds it: stopping it would kill that work."""
        for other in self.jobs:
            if (
                other.job_id != job_id
                and other.state.live
                and other.vm is not None
                and other.vm.name == name
                and other.job_id not in self.ending
            ):
                return True
        record = self.records.get(name)
        lease = record.lease if record else None
        if lease is None or lease.job_id == job_id or lease.expires_at <= self.now:
            return False
        return self._lease_holds(lease.job_id, lease.expires_at)

    def _lease_holds(self, lease_job_id: str, expires_at: datetime) -> bool:
        """A live lease that keeps its VM: a drain, an in-flight submit, a live job's."""
        if is_drain_lease(lease_job_id) or self._being_submitted(lease_job_id, expires_at):
            return True
        leased = self.by_id.get(lease_job_id)
        return leased is not None and not leased.state.terminal and lease_job_id not in self.ending

    def _live_job(self, job: Job) -> None:
        vm_status = self._status(job.vm.name) if job.vm else None
        vm_down = job.vm is None or vm_status is None or vm_status in DOWN_STATUSES
        if job.cancel_requested and vm_down:
            self._end_job(CancelJob(job.job_id, job.state, job.attempt, "cancelled; VM gone"), job)
            return
        if job.state is JobState.STARTING:
            code = self.start_errors.get(job.job_id)
            if code is not None:
                if code in STOCKOUT_CODES and job.vm is not None:
                    until = self.now + timedelta(seconds=self.policy.stockout_cooldown_s)
                    self.vm_actions.append(
                        CooldownVm(job.vm.name, job.vm.zone, until, f"start failed: {code}")
                    )
                    self.cooling.add(job.vm.name)
                self._fault(job, f"start of VM {job.vm.name if job.vm else '?'} failed: {code}")
                return
            age = age_s(job.dispatched_at or job.state_changed_at, self.now)
            if vm_status == "TERMINATED" and age is not None and age >= START_TAKES_S:
                # The dispatcher commits the job `starting` before it requests the start, and
                # stores no operation: a VM still down this long after did not start (refused
                # in its operation, or the dispatcher died before the request).
                assert job.vm is not None
                until = self.now + timedelta(seconds=self.policy.stockout_cooldown_s)
                self.vm_actions.append(
                    CooldownVm(job.vm.name, job.vm.zone, until, "start did not take")
                )
                self.cooling.add(job.vm.name)
                self._fault(job, f"VM {job.vm.name} still TERMINATED {age:.0f} s after dispatch")
                return
            if age is not None and age >= self.policy.boot_timeout_s:
                self._fault(
                    job, f"worker did not claim the job within {self.policy.boot_timeout_s:g} s"
                )
            return
        # RUNNING
        if vm_status in DOWN_STATUSES:
            self._fault(job, f"VM {job.vm.name if job.vm else '?'} is {vm_status}")
            return
        age = age_s(job.heartbeat_at or job.started_at or job.state_changed_at, self.now)
        if age is not None and age >= self.policy.heartbeat_timeout_s:
            self._fault(job, f"no heartbeat for {age:.0f} s")

    def vm_policies(self) -> None:
        in_use = {
            j.vm.name for j in self.jobs if j.state.live and j.vm and j.job_id not in self.ending
        }
        for name in sorted(self.records):
            self._stale_lease(self.records[name], in_use)
        for name in sorted(self.fleet):
            status = self.fleet[name]
            if name in self.stopping or name in in_use:
                continue
            if status.status in BOOTING_STATUSES:
                reason = self._stuck_reason(status)
            elif status.status == "RUNNING":
                reason = self._idle_reason(name)
            else:
                continue
            if reason is not None:
                self.vm_actions.append(StopVm(name, status.zone, reason))
                self.stopping.add(name)

    def _being_submitted(self, lease_job_id: str, expires_at: datetime) -> bool:
        """A fresh lease naming a job not in the snapshot: a lease is committed with its job,
        but the snapshot reads the jobs before the leases, so a job committed between the two
        reads is missing from it; within the dispatch grace a missing job is not a stray."""
        if lease_job_id in self.by_id or is_drain_lease(lease_job_id):
            return False
        leased_at = expires_at - timedelta(seconds=self.policy.lease_ttl_s)
        return (self.now - leased_at).total_seconds() < self.policy.dispatch_grace_s

    def _stale_lease(self, record: VmRecord, in_use: set[str]) -> None:
        """A lease whose job ended (or never existed) keeps the VM from being used again."""
        lease = record.lease
        if lease is None or record.name in self.releasing or record.name in in_use:
            return
        if is_drain_lease(lease.job_id) and lease.expires_at > self.now:
            return
        if self._being_submitted(lease.job_id, lease.expires_at):
            return
        job = self.by_id.get(lease.job_id)
        if job is None or job.state.terminal:
            state = job.state.value if job else "missing"
            self.vm_actions.append(
                ReleaseLease(record.name, lease.job_id, f"leased job is {state}")
            )
            self.releasing.add(record.name)

    def _stuck_reason(self, status: VmStatus) -> str | None:
        """Why a VM no live job names, still PROVISIONING/STAGING, should stop, or None.

        Its boot counts from its latest known start: Compute's `lastStartTimestamp` or when
        its lease was taken, whichever is later. Past `boot_timeout_s` it is hung (a job on it
        would have been retried by now). A VM with no known start and no lease is nobody's.
        """
        record = self.records.get(status.name)
        lease = record.lease if record else None
        if lease is not None and lease.expires_at > self.now and is_drain_lease(lease.job_id):
            return None
        starts = [t for t in (status.last_start_at, _leased_at(lease, self.policy)) if t]
        if not starts:
            return None if lease is not None else f"{status.status} with no lease and no start"
        age = age_s(max(starts), self.now) or 0.0
        if age < self.policy.boot_timeout_s:
            return None
        return f"{status.status} for {age:.0f} s (boot timeout {self.policy.boot_timeout_s:g} s)"

    def _idle_reason(self, name: str) -> str | None:
        """Why a RUNNING VM that no live job names should stop, or None to leave it."""
        record = self.records.get(name)
        lease = record.lease if record else None
        if lease is not None and lease.expires_at > self.now:
            if is_drain_lease(lease.job_id):
                return None  # a draining worker holds its VM until the lease expires
            if self._being_submitted(lease.job_id, lease.expires_at):
                return None
            job = self.by_id.get(lease.job_id)
            if job is not None and not job.state.terminal and job.job_id not in self.ending:
                return None  # leased to a job being dispatched
        if record and record.last_seen:
            seen_age = age_s(record.last_seen, self.now) or 0.0
            if seen_age < self.policy.drain_grace_s:
                return None  # a draining worker looks for its next job, then shuts down
        if lease is None:
            return "running without a lease"
        if is_drain_lease(lease.job_id):
            return f"drain lease {lease.job_id} expired"
        job = self.by_id.get(lease.job_id)
        if job is None or job.state.terminal:
            return f"leased job {lease.job_id} is {job.state.value if job else 'missing'}"
        return f"lease for {lease.job_id} expired"

    def dispatches(self) -> list[DispatchJob]:
        requeued = {a.job_id for a in self.job_actions if isinstance(a, RequeueJob)}
        return dispatches_of(
            self.jobs,
            requeued,
            self.ending,
            Fleet(self.fleet, self.records, self.cooling, self.releasing),
            self.now,
            self.policy,
            self.served,
        )


def _leased_at(lease: Lease | None, policy: ReaperPolicy) -> datetime | None:
    return None if lease is None else lease.expires_at - timedelta(seconds=policy.lease_ttl_s)


def _why(action: JobAction | CompleteFromDoneFlag) -> str:
    if isinstance(action, FailJob | TimeOutJob):
        return action.message
    return action.reason


def plan(
    jobs: Iterable[Job],
    vms: Iterable[VmRecord],
    fleet: Iterable[VmStatus],
    now: datetime,
    policy: ReaperPolicy,
    start_errors: Mapping[str, str] | None = None,
    done_flags: Mapping[str, int] | None = None,
    served: ServedByClass | None = None,
) -> list[Action]:
    """The actions for one reaper period: job changes first, then VM changes, then dispatches.

    `jobs` holds every non-terminal job and every job a lease points to (a lease whose job is
    absent is treated as pointing at a deleted job). `start_errors` maps a starting job's id
    to the error code of its failed start operation. `done_flags` maps a job id to the
    attempt its `jobs/{id}/done.json` declares (only jobs whose flag was looked at and found).
    `served`: when waiting callers were last served per class (domain/fair_share.py).
    """
    flags = done_flags or {}
    planner = _Planner(jobs, vms, fleet, now, policy, start_errors or {}, flags, served or {})
    planner.job_policies()
    planner.stop_vms_of_ended_jobs()
    planner.vm_policies()
    dispatches = planner.dispatches()
    # Warm schedules (domain/_reaper_warm.py): last, so it sees what the rest stops and starts.
    p = planner
    warm = warm_step(
        p.jobs, p.ending, p.fleet, p.records, p.stopping, p.cooling, dispatches, now, policy
    )
    return [*planner.job_actions, *planner.vm_actions, *warm, *dispatches]
