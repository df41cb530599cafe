"""The agent's life: claim the job the VM booted for, run it, hand over to the next, power off.

Hand-over: when a job ends, one immediate attempt to claim the next job is made BEFORE its
done flag is written, so the manifest can carry `next_job_id` and the completion trigger keeps
this VM's lease (re-pointed to the next job). Only when none was waiting does the done flag go
out without it; the lease is first re-pointed to `drain:{vm_name}` (until the grace plus a
margin), so neither the trigger (which releases only the manifest's job's lease) nor the reaper
(which stops a RUNNING VM without a live lease) takes the VM from under the draining agent. It
then looks for `drain_grace_s` (jobs the dispatcher gave this VM, then queued jobs, those whose
models are cached first) before releasing the lease and powering off: woken at once by a listen
on its class's queue (_drain_wait.py), else polling. Inside a warm window of its class
(`warm_schedule`, domain/warm.py) it keeps draining instead, its lease re-pointed to
`drain:warm:{vm_name}`; the reaper stops the warm VMs beyond the class's count by swapping that
lease for a stop marker, after which this agent claims nothing and powers off.

Isolation: ComfyUI's input, output and temp folders and the job model view are emptied when
the agent starts and after every job, however it ended (a stopped run is first waited out),
before the next claim; an agent that cannot empty them claims no further job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from comfyburst.domain.reaper import DRAIN_LEASE_PREFIX, warm_lease_id
from comfyburst.domain.usage import WARM_IDLE_KEPT_DAYS
from comfyburst.domain.warm import parse_schedule, stays_warm
from comfyburst.errors import PreconditionFailed
from comfyburst.ports import Clock, JobStore
from comfyburst.schema import (
    DoneManifest,
    DoneStatus,
    Job,
    JobPhases,
    VmRef,
    WarmIdle,
    WorkerTimings,
)
from comfyburst.states import JobState
from comfyburst_worker._drain_wait import DrainWait, QueueSignal
from comfyburst_worker._queue_pick import CANDIDATES, ranked_queued
from comfyburst_worker.claims import (
    TAKEN,
    ClaimRule,
    Taken,
    VmClass,
    claim_starting,
    queued_claim,
)
from comfyburst_worker.env_job import EnvBuildRunner
from comfyburst_worker.env_layers import EnvironmentNotReady
from comfyburst_worker.heartbeat import JobWatch
from comfyburst_worker.job_runner import JobRunner, RunResult, Services
from comfyburst_worker.phases import PhaseLog, wall_of
from comfyburst_worker.preemption import PreemptionWatch

log = logging.getLogger(__name__)

_CLAIM_TRIES = 3
# Past the drain grace, so a slow last claim attempt and the power-off stay covered; short,
# so a crashed draining agent's VM is stopped by the reaper soon after.
_DRAIN_MARGIN_S = 30.0


class Agent:
    def __init__(
        self,
        services: Services,
        vm: VmRef,
        booted_at: float | None = None,
        preemption: PreemptionWatch | None = None,
        phases: PhaseLog | None = None,
        gpu_class: str | None = None,
        queue: QueueSignal | None = None,
    ) -> None:
        self.s, self.vm = services, vm
        # The VM's GPU class (its metadata attribute; none: the default): it drains only
        # queued jobs of that class.
        default_class = services.config.default_gpu_class
        self.vm_class = VmClass(gpu_class or default_class, default_class)
        # A Spot preemption requeues the running job and ends the agent (no more claims).
        self.preemption = preemption
        self.runner = JobRunner(services)
        self.booted_at = booted_at if booted_at is not None else time.monotonic()
        self.phases = phases or PhaseLog(
            services.clock, wall_of(self.booted_at, services.clock.now())
        )
        self.finished: list[str] = []
        self.drain_id = f"{DRAIN_LEASE_PREFIX}{vm.name}"
        self.warm_id = warm_lease_id(vm.name)
        # Checked where the deployment's settings load; a VM given a bad one just never stays.
        try:
            self.warm = parse_schedule(services.config.warm_schedule)
        except ValueError as exc:
            log.warning("warm schedule ignored: %s", exc)
            self.warm = {}
        self.drain_until: datetime | None = None
        # The job id this VM's lease names, as far as this agent knows.
        self.holder: str | None = None
        # Set when the folders could not be emptied: no other job may run on what is left.
        self.tainted = False
        self._env_runner: EnvBuildRunner | None = None
        self._warm_writes: list[threading.Thread] = []  # joined before power-off
        # A listen on this class's queue (started by the caller): wakes the drain at once.
        settings = services.settings
        self.waiter = DrainWait(
            queue, settings.drain_poll_interval_s, settings.drain_listen_poll_interval_s
        )

    def run(self, boot_job_id: str | None, started_for_warm: bool = False) -> None:
        """Claim, run and drain until no work is left; the caller powers off.
        `started_for_warm`: the VM's lease was the drain marker the reaper's warm start sets;
        inside its class's warm window the time until a claim is the schedule's."""
        job: Job | None = None
        claim_s = 0.0
        # Whatever a crashed or killed agent left; raises (no claim) if it cannot be removed.
        self.s.folders.empty()
        self.s.view.clear()
        self.s.cache.clear_partials()
        if self.s.env is not None:
            self.s.env.start()
        if boot_job_id:
            t0 = time.monotonic()
            job = claim_starting(self.s.store, boot_job_id, self.vm, self.s.clock)
            claim_s = time.monotonic() - t0
            if job is None:
                log.warning("job %s is not this VM's to claim; draining", boot_job_id)
        in_window = stays_warm(self.warm, self.vm_class.name, self.s.clock.now())
        if boot_job_id is None and started_for_warm and in_window:
            self.phases.booted_without_job()
        if job is None:
            self._hold_for_drain(boot_job_id)
        since = self.booted_at
        while True:
            if self.preemption is not None and self.preemption.preempted.is_set():
                break  # the VM is going down; the running job was requeued
            drained = job is None
            if job is None:
                job, claim_s = self._drain()
                since = time.monotonic()
            if job is None:
                break
            self.holder = job.job_id
            phases = self.phases.claimed(drained=drained)
            self._record_warm(self.phases.end_warm())
            job, claim_s = self._run_one(job, claim_s, since, phases)
            since = time.monotonic()
        self._record_idle_after()
        self._record_warm(self.phases.end_warm())
        for writer in self._warm_writes:
            writer.join(timeout=10)
        self.s.leases.release([self.holder, self.drain_id, self.warm_id, *self.finished])
        self.s.cache.wait_for_mirrors()
        self.s.follower.close()
        if self.waiter.signal is not None:
            self.waiter.signal.stop()

    def _hold_for_drain(self, from_job: str | None) -> None:
        """Lease the VM to the drain marker for the grace period (plus a margin)."""
        grace = self.s.config.drain_grace_s + _DRAIN_MARGIN_S
        self.drain_until = self.s.clock.now() + timedelta(seconds=grace)
        if self.s.leases.repoint(from_job, self.drain_id, self.drain_until):
            self.holder = self.drain_id
        else:
            log.warning("lease of %s is not %s's; draining without it", self.vm.name, from_job)

    def _record_idle_after(self) -> None:
        """The VM's idle after its last job until power-off goes on that job's document (its
        result message was fixed when it ended)."""
        idle_s = self.phases.idle_after_s()
        if not self.finished or idle_s is None:
            return
        try:
            self.s.store.patch_job(self.finished[-1], {"idle_after_s": idle_s})
        except Exception as exc:  # the receipt lacks it; the VM still powers off
            log.warning("idle time of %s not recorded: %s", self.finished[-1], exc)

    def end_warm_now(self) -> None:
        """At a shutdown signal: while the VM idles (no job runs), the last job's idle after
        it and the warm stretch on, if any, recorded before the process ends (the writes
        waited for a few seconds at most)."""
        if self.holder in (self.drain_id, self.warm_id):
            self._record_idle_after()
        self._record_warm(self.phases.end_warm())
        for writer in list(self._warm_writes):
            writer.join(timeout=5)

    def _record_warm(self, stretch: tuple[datetime, datetime] | None) -> None:
        """A warm stretch that ended, recorded apart (usage shows it to admins), written beside
        the claim's run rather than before it; the VM goes on whatever the write does."""
        if stretch is None:
            return
        started, ended = stretch
        record = WarmIdle(
            vm_name=self.vm.name,
            gpu_class=self.vm_class.name,
            started_at=started,
            ended_at=ended,
            idle_s=round(max(0.0, (ended - started).total_seconds()), 3),
            expire_at=ended + timedelta(days=WARM_IDLE_KEPT_DAYS),
        )

        earlier = [w for w in self._warm_writes if w.is_alive()]

        def write() -> None:
            for previous in earlier:  # in order: a stretch's later end is written last
                previous.join(timeout=10)
            try:
                self.s.store.add_warm_idle(record)
            except Exception as exc:
                log.warning("warm stretch of %s not recorded: %s", self.vm.name, exc)

        writer = threading.Thread(target=write, name="warm-idle", daemon=True)
        writer.start()
        self._warm_writes = [*earlier, writer]

    def _run_one(
        self, job: Job, claim_s: float, since: float, phases: JobPhases
    ) -> tuple[Job | None, float]:
        t0 = time.monotonic()
        log.info("job %s: running (attempt %d)", job.job_id, job.attempt)
        timings = WorkerTimings(claim_s=round(claim_s, 4))
        stop = JobRunner.stop_for(job, self.s.comfy, self.s.clock)

        def on_stop() -> None:
            cancelled = watch.cancelled.is_set()
            stop.request(DoneStatus.CANCELLED if cancelled else None, lost=watch.lost.is_set())

        watch = JobWatch(
            self.s.store,
            self.s.leases,
            self.s.clock,
            job,
            self.s.settings.heartbeat_interval_s or self.s.config.heartbeat_interval_s,
            self.s.settings.job_poll_interval_s,
            on_stop=on_stop,
        )
        watch.start()
        if self.preemption is not None:
            self.preemption.bind(job, stop)
        try:
            try:
                if job.environment_build is not None:  # builds an environment, not a workflow
                    result = self._build(job, timings, phases)
                else:
                    result = self.runner.run(job, stop, timings, phases)
            finally:
                if self.preemption is not None:
                    self.preemption.unbind()
                watch.stop()
        except BaseException:
            self._reset_workspace(job.job_id, wait=self.runner.prompt_posted)
            raise
        # A prompt that did not succeed may still run in ComfyUI (and write files).
        wait = self.runner.prompt_posted and result.status is not DoneStatus.SUCCEEDED
        # A live listen that says this class's queue is empty spares the look before the flag
        # (no job can be starting here: this VM's lease names this job); the folders are then
        # emptied after the flag (still before any claim), off the result's latency path.
        # Not for a run to wait out first: its wait would come out of the drain lease taken
        # before the flag (the margin kept for the last claim and the power-off).
        flag_first = not wait and result.status is not None and self.waiter.listening()
        if not flag_first:
            self._reset_workspace(job.job_id, wait=wait)
        if result.status is None:
            log.warning("job %s: no longer ours; no done flag", job.job_id)
            self._hold_for_drain(job.job_id)
            return None, 0.0
        self.phases.done(phases, self.runner.comfy_seen_at)
        t1 = time.monotonic()
        next_job = None if flag_first else self._claim_next(job.job_id)
        next_claim_s = time.monotonic() - t1
        if next_job is None:
            # Before the done flag: the trigger releases only a lease that names this job.
            self._hold_for_drain(job.job_id)
        timings.total_s = round(time.monotonic() - t0 + claim_s, 4)
        timings.gpu_s = round(time.monotonic() - since, 4)
        manifest = DoneManifest(
            job_id=job.job_id,
            attempt=job.attempt,
            vm=self.vm.name,
            status=result.status,
            outputs=result.outputs,
            error=result.error,
            timings=result.timings,
            written_at=self.s.clock.now(),
            next_job_id=next_job.job_id if next_job else None,
            phases=phases,
            environment_built=getattr(result, "environment_built", None),
        )
        try:
            self._write_done(manifest)
        finally:
            if flag_first:
                self._reset_workspace(job.job_id, wait=wait)
        self.finished.append(job.job_id)
        log.info("job %s: %s; next %s", job.job_id, result.status.value, manifest.next_job_id)
        return next_job, next_claim_s

    def _build(self, job: Job, timings: WorkerTimings, phases: JobPhases) -> RunResult:
        """A build job, ComfyUI first back on the base for its caller: the build's pack code never
        runs beside another environment's process or private layer."""
        try:
            self.runner.ready_environment(job, timings, phases)
        except EnvironmentNotReady as exc:
            log.warning("job %s: ComfyUI not back on the base for a build: %s", job.job_id, exc)
            return RunResult(DoneStatus.FAILED, error=exc.job_error(), timings=timings)
        return self.env_runner().run(job)

    def env_runner(self) -> EnvBuildRunner:
        """The build-job runner, made on first use."""
        if self._env_runner is None:
            self._env_runner = EnvBuildRunner.of_settings(
                self.s.settings, self.s.blobs, self.s.config
            )
        return self._env_runner

    def _reset_workspace(self, job_id: str, *, wait: bool) -> None:
        """Empty ComfyUI's folders and the model view before anything else can be claimed."""
        try:
            if wait:
                # A stopped or failed run may still be writing; wait until ComfyUI is idle.
                self.s.comfy.wait_idle(self.s.settings.comfyui_idle_timeout_s)
            removed = self.s.folders.empty()
            self.s.view.clear()
            log.info("job %s: %d entries removed from ComfyUI's folders", job_id, removed)
        except Exception as exc:
            log.error("job %s: folders not emptied (%s); no further job here", job_id, exc)
            self.tainted = True

    def _write_done(self, manifest: DoneManifest) -> None:
        """Write the done flag: the first one per attempt stands, and a flag an older attempt
        left behind is replaced (else the retry could never report its result)."""
        from comfyburst.domain.manifest import declared_attempt  # used by this function only

        bucket, name = self.s.config.signals_bucket, f"jobs/{manifest.job_id}/done.json"
        data = manifest.model_dump_json(exclude_none=True).encode()
        expected = 0  # only if absent
        for _ in range(3):  # each retry means another writer won a generation meanwhile
            try:
                self.s.blobs.write(
                    bucket, name, data, "application/json", if_generation_match=expected
                )
                return
            except PreconditionFailed:
                pass
            # The generation before the content: the conditional write below succeeds only
            # if the object is still that generation, so the content read is that one's.
            generation = self.s.blobs.generation(bucket, name)
            existing = self.s.blobs.read(bucket, name) if generation is not None else None
            if generation is None or existing is None:
                expected = 0  # deleted meanwhile
                continue
            theirs = declared_attempt(existing)
            # An unreadable flag declares no attempt: it reports nothing, so it is replaced
            # (else no later attempt could ever report its result).
            if theirs is not None and theirs >= manifest.attempt:
                log.warning(
                    "%s already holds attempt %s's flag; it stands (ours: attempt %d)",
                    name,
                    theirs,
                    manifest.attempt,
                )
                return
            log.info("%s holds attempt %s's flag; replacing it", name, theirs)
            expected = generation
        log.warning("%s kept changing; attempt %d's flag not written", name, manifest.attempt)

    def _drain(self) -> tuple[Job | None, float]:
        if self.tainted:
            return None, 0.0
        deadline = time.monotonic() + self.s.config.drain_grace_s
        while True:
            self.waiter.arm()
            t0 = time.monotonic()
            job = self._claim_next(self.holder)
            if job is not None:
                return job, time.monotonic() - t0
            if not self.waiter.wait(deadline - time.monotonic()):
                if not self._stay_warm():
                    return None, 0.0
                deadline = time.monotonic() + self.s.config.drain_grace_s

    def _stay_warm(self) -> bool:
        """At the end of a drain grace: inside its class's warm window the VM stays up for
        another grace, holding the warm lease (False once the reaper took that lease)."""
        now = self.s.clock.now()
        preempted = self.preemption is not None and self.preemption.preempted.is_set()
        if self.tainted or preempted or not stays_warm(self.warm, self.vm_class.name, now):
            return False
        until = now + timedelta(seconds=self.s.config.drain_grace_s + _DRAIN_MARGIN_S)
        if not self.s.leases.repoint(self.holder, self.warm_id, until):
            log.info("warm lease of %s taken (the reaper stops it); powering off", self.vm.name)
            return False
        self.holder, self.drain_until = self.warm_id, until
        self.phases.hold_warm(now)
        # The stretch so far, written at each renewal (the same document each time): a VM that
        # dies without its shutdown signal loses at most one grace of it.
        self._record_warm(self.phases.warm_so_far())
        return True

    def _claim_next(self, previous: str | None) -> Job | None:
        """A job the dispatcher gave this VM, else the best queued one; None if none."""
        if self.tainted:
            return None
        store, clock = self.s.store, self.s.clock
        # One query for both on the hot path; queued alone if starting jobs filled it.
        try:
            listed = store.list_jobs([JobState.STARTING, JobState.QUEUED], limit=2 * CANDIDATES)
        except Exception as exc:  # a store hiccup: no next job this time, not a dead agent
            log.warning("listing the queue failed: %s", exc)
            return None
        for job in listed:
            mine = job.vm is not None and job.vm.name == self.vm.name
            if job.state is JobState.STARTING and mine:
                claimed = self._claim(claim_starting, job.job_id)
                if claimed is not None:
                    return claimed

        ranked = ranked_queued(self.s, self.vm, self.vm_class, listed)
        if not ranked:
            return None
        rule = queued_claim(self.vm, clock, self.vm_class)
        for job in ranked[:_CLAIM_TRIES]:
            taken = self._take(job.job_id, previous, rule)
            if taken is TAKEN:
                return None  # another job holds this VM's lease now (a dispatcher's)
            if taken is not None:
                return taken
        return None

    def _take(self, job_id: str, previous: str | None, rule: ClaimRule) -> Job | Taken | None:
        """The lease and the claim in one commit; one that errors is a claim not made, unless
        the job turns out to be running here after all (as in `_claim`)."""
        try:
            return self.s.leases.take(job_id, previous, rule)
        except Exception as exc:
            log.warning("claiming job %s failed: %s", job_id, exc)
        return self._running_here(job_id)

    def _claim(
        self, claim: Callable[[JobStore, str, VmRef, Clock], Job | None], job_id: str
    ) -> Job | None:
        """Run a claim transaction; one that errors (e.g. it lost to other claimants too
        often) is a claim not made, unless the job turns out to be running here after all.
        An exception here would end the agent before the finished job's done flag."""
        try:
            return claim(self.s.store, job_id, self.vm, self.s.clock)
        except Exception as exc:
            log.warning("claiming job %s failed: %s", job_id, exc)
        return self._running_here(job_id)

    def _running_here(self, job_id: str) -> Job | None:
        try:
            job = self.s.store.get_job(job_id)
        except Exception:
            return None
        if job is None or job.state is not JobState.RUNNING or job.vm is None:
            return None
        return job if job.vm.name == self.vm.name else None


def poweroff(command: str, runner: Callable[[list[str]], object]) -> bool:
    """Run the power-off command; 'exit' means: just let the process end. True if ran."""
    import shlex

    if command.strip() in ("", "exit"):
        return False
    runner(shlex.split(command))
    return True
