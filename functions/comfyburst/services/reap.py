"""The reaper use case: snapshot, plan (domain/reaper.py), apply each action through the ports.

Each job change is one `update_job` transaction guarded by the state and attempt the planner
saw: a job that changed meanwhile is skipped and the next period looks again. One action's
error never stops the others. Every terminal state set here publishes its result message, and
results left unpublished by anyone (a failed publish) are published again.

Lost or late done events: before a starting/running job is ended for a dead worker (or its
deadline), its `jobs/{id}/done.json` is read; if it is this attempt's, the planner is run again
with that knowledge and the job is completed from the flag by `services/complete.py`, exactly
as the trigger would (so a job the worker finished is never retried or failed).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from comfyburst.domain import gpu_classes, reaper
from comfyburst.domain.fair_share import DispatchOrder
from comfyburst.domain.jobs import requeue
from comfyburst.domain.manifest import declared_attempt
from comfyburst.domain.reaper_actions import StartWarmVm, StopWarmVm
from comfyburst.errors import NotFound, PreconditionFailed
from comfyburst.ports import BlobStore, Clock, Fleet, JobStore, Publisher, UrlSigner, VmStatus
from comfyburst.schema import Job, JobError, VmRecord
from comfyburst.services._fair_served import served_for
from comfyburst.services._leases import release_lease
from comfyburst.services._ops_log import log_pool_gauges
from comfyburst.services._warm_vms import WarmSkipped, apply_warm
from comfyburst.services.complete import CompletionDeps, StorageObject, handle_done_flag
from comfyburst.services.results import finish, publish_result
from comfyburst.states import JobState

log = logging.getLogger(__name__)

_REQUEST_ID_NAMESPACE = uuid.UUID("2b7f4d1e-8c0a-4f43-9a57-5d1f0b7c6e21")
_LIVE_OR_QUEUED = (JobState.QUEUED, JobState.STARTING, JobState.RUNNING)

Dispatch = Callable[[Sequence[Job]], Sequence[Any]]


def policy_from(settings: Any) -> reaper.ReaperPolicy:
    """The planner's thresholds from FunctionSettings."""
    return reaper.ReaperPolicy(
        boot_timeout_s=settings.boot_timeout_s,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        max_attempts=settings.max_attempts,
        stockout_cooldown_s=settings.stockout_cooldown_s,
        drain_grace_s=settings.drain_grace_s,
        dispatch_grace_s=settings.dispatch_grace_s,
        lease_ttl_s=settings.lease_ttl_s,
        classes=gpu_classes.for_settings(settings),
        caller_limits=getattr(settings, "caller_limits", None),
        dispatch_order=getattr(settings, "dispatch_order", DispatchOrder.FAIR),
    )


@dataclass(frozen=True)
class ReaperDeps:
    store: JobStore
    fleet: Fleet
    publisher: Publisher
    clock: Clock
    dispatch: Dispatch | None = None  # Dispatcher.dispatch_many; None: plan dispatches only
    # The done-flag safety net: read flags in the signals bucket, sign output URLs when
    # completing from one. Without `blobs` (some tests) no flag is ever looked at.
    blobs: BlobStore | None = None
    signer: UrlSigner | None = None
    signals_bucket: str = ""
    outputs_bucket: str = ""
    # The receipt's class and price of a job completed from its flag (CompletionDeps.price_of).
    price_of: Callable[[Job], tuple[str, float]] | None = None
    # A build job completed from its flag marks its environment (CompletionDeps.environments).
    environments: Any = None
    # The deployment config (JSON) a VM started for a warm schedule gets first (_warm_vms.py).
    deployment_config: str = ""

    def completion(self) -> CompletionDeps | None:
        """The done-flag use case's deps, sharing this reaper's store, publisher and clock."""
        if self.blobs is None or self.signer is None or not self.signals_bucket:
            return None
        return CompletionDeps(
            store=self.store,
            blobs=self.blobs,
            signer=self.signer,
            publisher=self.publisher,
            clock=self.clock,
            signals_bucket=self.signals_bucket,
            outputs_bucket=self.outputs_bucket,
            fleet=self.fleet,
            price_of=self.price_of,
            environments=self.environments,
        )


@dataclass(frozen=True)
class Snapshot:
    jobs: list[Job]
    vms: list[VmRecord]
    fleet: list[VmStatus]
    start_errors: dict[str, str]


class _Skipped(Exception):
    """The action no longer applies (a concurrent change won); the next period looks again."""


def take_snapshot(deps: ReaperDeps) -> Snapshot:
    """Jobs first, then leases, then the fleet: a job claimed after the job listing cannot be
    mistaken for one whose VM died (its VM is RUNNING by the time the fleet is read)."""
    # Every live job, however many (the store pages through them): a cap would leave the
    # newest jobs of a long backlog never timed out or dispatched.
    jobs = deps.store.list_jobs(_LIVE_OR_QUEUED, limit=None)
    vms = deps.store.list_vms()
    known = {j.job_id for j in jobs}
    for record in vms:
        lease = record.lease
        if (
            lease is not None
            and lease.job_id not in known
            and not reaper.is_drain_lease(lease.job_id)
        ):
            leased = deps.store.get_job(lease.job_id)
            known.add(lease.job_id)
            if leased is not None:
                jobs.append(leased)
    fleet = deps.fleet.list()
    start_errors: dict[str, str] = {}
    for job in jobs:
        if job.state is JobState.STARTING and job.vm is not None and job.vm.operation:
            try:
                code = deps.fleet.operation_error(job.vm.zone, job.vm.operation)
            except Exception:
                log.warning("reading start operation of %s failed", job.job_id, exc_info=True)
                continue
            if code:
                start_errors[job.job_id] = code
    return Snapshot(jobs, vms, fleet, start_errors)


def done_flag_name(job_id: str) -> str:
    """The done flag's object name in the signals bucket."""
    return f"jobs/{job_id}/done.json"


def read_done_flags(deps: ReaperDeps, job_ids: Sequence[str]) -> dict[str, int]:
    """{job id: attempt its done flag declares} for those of `job_ids` that have one.

    A flag that cannot be read counts as absent: the job is then ended as planned, so a
    storage outage cannot keep jobs from ending.
    """
    if deps.blobs is None or not deps.signals_bucket:
        return {}
    found: dict[str, int] = {}
    for job_id in dict.fromkeys(job_ids):
        try:
            raw = deps.blobs.read(deps.signals_bucket, done_flag_name(job_id))
        except Exception:
            log.warning("reading the done flag of %s failed", job_id, exc_info=True)
            continue
        attempt = declared_attempt(raw) if raw is not None else None
        if attempt is not None:
            found[job_id] = attempt
    return found


def run_reaper(
    deps: ReaperDeps, policy: reaper.ReaperPolicy, now: datetime | None = None
) -> dict[str, Any]:
    """One reaper period; returns a JSON-able summary of every action and its outcome."""
    now = now or deps.clock.now()
    snapshot = take_snapshot(deps)
    log_pool_gauges(snapshot.jobs, snapshot.vms, snapshot.fleet, now, policy.classes)
    args = (snapshot.jobs, snapshot.vms, snapshot.fleet, now, policy, snapshot.start_errors)
    actions = reaper.plan(*args)
    done_flags = read_done_flags(deps, reaper.done_flag_candidates(actions))
    # Fair share's "served least recently", looked up only for the classes it dispatches to.
    served = served_for(deps.store, snapshot.jobs, actions, policy, now)
    if done_flags or served:
        actions = reaper.plan(*args, done_flags, served)
    executor = _Executor(deps, now)
    results = [executor.apply(a) for a in actions if not isinstance(a, reaper.DispatchJob)]
    dispatches = [a for a in actions if isinstance(a, reaper.DispatchJob)]
    results.extend(executor.dispatch(dispatches))
    results.extend(executor.republish_unpublished())
    counts: dict[str, int] = {}
    for item in results:
        key = f"{item['action']}:{item['outcome']}"
        counts[key] = counts.get(key, 0) + 1
    summary = {"now": now.isoformat(), "counts": counts, "actions": results}
    log.info("reaper period done: %s", counts)
    return summary


class _Executor:
    def __init__(self, deps: ReaperDeps, now: datetime) -> None:
        self.deps = deps
        self.now = now
        self.applied_jobs: set[str] = set()

    def apply(self, action: reaper.Action) -> dict[str, Any]:
        entry = {"action": type(action).__name__, **_plain(action)}
        after = getattr(action, "after_job", None)
        if after is not None and after not in self.applied_jobs:
            return {**entry, "outcome": "skipped", "detail": f"job {after} was not changed"}
        try:
            detail = self._apply(action)
        except _Skipped as exc:
            return {**entry, "outcome": "skipped", "detail": str(exc)}
        except Exception as exc:
            log.exception("reaper action %s failed", entry)
            return {**entry, "outcome": "error", "detail": f"{type(exc).__name__}: {exc}"}
        # One line per change, with its reason: why jobs were retried is read from the logs.
        target = getattr(action, "job_id", None) or getattr(action, "name", None)
        log.info("reaper %s %s: %s", entry["action"], target, _reason(action))
        return {**entry, "outcome": "applied", **({"detail": detail} if detail else {})}

    def _apply(self, action: reaper.Action) -> str | None:
        if isinstance(action, reaper.RequeueJob):
            self._change_job(action, lambda job: requeue(job, self.now, action.reason))
            return None
        if isinstance(action, reaper.FailJob):
            error = JobError(type=action.error_type, message=action.message)
            return self._end_job(action, JobState.FAILED, error)
        if isinstance(action, reaper.TimeOutJob):
            return self._end_job(
                action, JobState.TIMED_OUT, JobError(type="timed_out", message=action.message)
            )
        if isinstance(action, reaper.CancelJob):
            error = JobError(type="cancelled", message=action.reason)
            return self._end_job(action, JobState.CANCELLED, error)
        if isinstance(action, reaper.CompleteFromDoneFlag):
            return self._complete(action)
        if isinstance(action, reaper.StopVm):
            op = self.deps.fleet.stop(
                action.zone, action.name, self._request_id("stop", action.name)
            )
            return f"operation {op}"
        if isinstance(action, reaper.ReleaseLease):
            if not release_lease(self.deps.store, action.vm_name, action.job_id):
                raise _Skipped("lease already changed")
            return None
        if isinstance(action, reaper.CooldownVm):
            self._cooldown(action)
            return None
        if isinstance(action, StartWarmVm | StopWarmVm):
            verb = "warm-start" if isinstance(action, StartWarmVm) else "warm-stop"
            request_id = self._request_id(verb, action.name)
            try:
                config = self.deps.deployment_config
                return apply_warm(
                    self.deps.store, self.deps.fleet, action, self.now, request_id, config
                )
            except WarmSkipped as exc:
                raise _Skipped(str(exc)) from None
        raise TypeError(f"unknown action {action!r}")

    def _change_job(self, action: reaper.JobAction, change: Callable[[Job], Job]) -> Job:
        applied = False

        def mutate(job: Job) -> Job | None:
            nonlocal applied  # set on every run: a retried transaction decides afresh
            applied = job.state is action.seen_state and job.attempt == action.seen_attempt
            return change(job) if applied else None

        try:
            stored = self.deps.store.update_job(action.job_id, mutate)
        except NotFound:
            raise _Skipped("job deleted") from None
        if not applied:
            raise _Skipped(f"job is {stored.state.value} (attempt {stored.attempt}) now")
        self.applied_jobs.add(action.job_id)
        return stored

    def _end_job(self, action: reaper.JobAction, target: JobState, error: JobError) -> str:
        stored = self._change_job(
            action, lambda job: finish(job, target, self.now, None, error=error)
        )
        publish_result(self.deps.store, self.deps.publisher, stored, self.deps.clock.now())
        return "result published"

    def _complete(self, action: reaper.CompleteFromDoneFlag) -> str:
        """Complete the job from its done flag, as the trigger would have."""
        completion = self.deps.completion()
        if completion is None:
            raise _Skipped("no blob store to read the done flag with")
        flag = StorageObject(completion.signals_bucket, done_flag_name(action.job_id))
        outcome = handle_done_flag(completion, flag)
        kind = outcome["outcome"]
        if kind not in ("completed", "republished", "manifest_invalid"):
            raise _Skipped(f"done flag: {kind}")
        self.applied_jobs.add(action.job_id)
        return f"done flag: {kind} ({outcome.get('state')})"

    def _cooldown(self, action: reaper.CooldownVm) -> None:
        record, version = self.deps.store.get_vm(action.vm_name)
        base = record or VmRecord(name=action.vm_name, zone=action.zone)
        if base.cooldown_until is not None and base.cooldown_until >= action.until:
            raise _Skipped("already cooling down")
        try:
            self.deps.store.put_vm(
                base.model_copy(update={"cooldown_until": action.until}), version
            )
        except PreconditionFailed:
            raise _Skipped("VM document changed") from None

    def _request_id(self, verb: str, name: str) -> str:
        # Stable within one period, so a retried call is not applied twice.
        return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{verb}/{name}/{self.now.isoformat()}"))

    def dispatch(self, actions: list[reaper.DispatchJob]) -> list[dict[str, Any]]:
        if not actions or self.deps.dispatch is None:
            return [
                {
                    "action": "DispatchJob",
                    "job_id": a.job_id,
                    "outcome": "skipped",
                    "detail": "no dispatcher",
                }
                for a in actions
            ]
        jobs = [j for j in (self.deps.store.get_job(a.job_id) for a in actions) if j is not None]
        try:
            outcomes = self.deps.dispatch(jobs)
        except Exception as exc:
            log.exception("dispatch from the reaper failed")
            return [
                {
                    "action": "DispatchJob",
                    "job_id": j.job_id,
                    "outcome": "error",
                    "detail": f"{type(exc).__name__}: {exc}",
                }
                for j in jobs
            ]
        results = []
        for job, outcome in zip(jobs, outcomes, strict=False):
            started = bool(getattr(outcome, "started", False))
            results.append(
                {
                    "action": "DispatchJob",
                    "job_id": job.job_id,
                    "outcome": "applied" if started else "skipped",
                    "detail": getattr(outcome, "reason", None)
                    or (f"started on {outcome.vm.name}" if started and outcome.vm else None),
                }
            )
        return results

    def republish_unpublished(self) -> list[dict[str, Any]]:
        """Results whose publish failed earlier (here, in the trigger, in cancel) go out now."""
        try:
            jobs = self.deps.store.list_unpublished_results(100)
        except Exception as exc:
            log.exception("listing unpublished results failed")
            return [{"action": "Republish", "outcome": "error", "detail": str(exc)}]
        results = []
        for job in jobs:
            entry = {"action": "Republish", "job_id": job.job_id, "state": job.state.value}
            try:
                publish_result(self.deps.store, self.deps.publisher, job, self.deps.clock.now())
            except Exception as exc:
                log.exception("republishing the result of %s failed", job.job_id)
                results.append({**entry, "outcome": "error", "detail": str(exc)})
                continue
            results.append({**entry, "outcome": "applied"})
        return results


def _reason(action: reaper.Action) -> str:
    return str(getattr(action, "reason", None) or getattr(action, "message", None) or "")


def _plain(action: Any) -> dict[str, Any]:
    data = asdict(action)
    return {
        k: (v.value if isinstance(v, JobState) else v.isoformat() if isinstance(v, datetime) else v)
        for k, v in data.items()
    }
