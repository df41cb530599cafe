"""One job on this VM: request → models → inputs → prompt → websocket → outputs."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from comfyburst.domain.manifest import reported_error
from comfyburst.ports import BlobStore, Clock, JobStore
from comfyburst.schema import (
    DeploymentConfig,
    DoneStatus,
    Job,
    JobError,
    JobPhases,
    JobRequest,
    OutputFile,
    Progress,
    WorkerTimings,
)
from comfyburst_worker import job_logs, prompt_scope
from comfyburst_worker._download import Cancel
from comfyburst_worker.claims import LeaseKeeper
from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.comfy_env import ComfyEnv, ready_for_job
from comfyburst_worker.errors import ExecutionFailed, InputError, WorkerError
from comfyburst_worker.model_cache import EnsureResult, ModelCache
from comfyburst_worker.model_view import JobModelView
from comfyburst_worker.outputs import OutputCollector
from comfyburst_worker.previews import PreviewForwarder
from comfyburst_worker.progress import ProgressWriter
from comfyburst_worker.prompt_errors import execution_error, prompt_error
from comfyburst_worker.run_tracker import Outcome, RunTracker
from comfyburst_worker.settings import WorkerSettings
from comfyburst_worker.workspace import ComfyFolders, place_input
from comfyburst_worker.ws_follower import WsFollower

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    status: DoneStatus | None  # None: the job is no longer ours; write no done flag
    outputs: list[OutputFile] = field(default_factory=list)
    error: JobError | None = None
    timings: WorkerTimings = field(default_factory=WorkerTimings)


@dataclass
class Services:
    """What a job run talks to; built once per agent."""

    settings: WorkerSettings
    config: DeploymentConfig
    store: JobStore
    blobs: BlobStore
    clock: Clock
    comfy: ComfyClient
    follower: WsFollower
    cache: ModelCache
    leases: LeaseKeeper
    view: JobModelView
    folders: ComfyFolders
    env: ComfyEnv | None = None  # None: this VM runs only the image's own nodes


class _Stop:
    """Why a run should end early; the first reason wins, ComfyUI is interrupted once."""

    def __init__(self, comfy: ComfyClient, deadline_mono: float) -> None:
        self.comfy, self.deadline_mono = comfy, deadline_mono
        self.reason: DoneStatus | None = None
        self.lost = False
        self.prompt_id: str | None = None
        self._lock = threading.Lock()

    def request(self, reason: DoneStatus | None, lost: bool = False) -> None:
        with self._lock:
            if self.reason is not None or self.lost:
                return
            self.reason, self.lost = reason, lost
            prompt_id = self.prompt_id
        if prompt_id is not None:
            try:
                self.comfy.interrupt(prompt_id)
            except Exception as exc:
                log.warning("interrupt of %s failed: %s", prompt_id, exc)

    def attach(self, prompt_id: str) -> None:
        """The prompt to interrupt; a stop that came while it was being posted lands now."""
        with self._lock:
            self.prompt_id = prompt_id
            pending = self.reason is not None or self.lost
        if pending:
            self.comfy.interrupt(prompt_id)

    def check(self) -> bool:
        if self.reason is None and not self.lost and time.monotonic() >= self.deadline_mono:
            self.request(DoneStatus.TIMED_OUT)
        return self.reason is not None or self.lost


class JobRunner:
    """Runs one claimed job; never raises for a job-level failure (it becomes the result)."""

    def __init__(self, services: Services) -> None:
        self.s = services
        self._comfy_ready = False
        self.comfy_seen_at: datetime | None = None  # when this runner's wait saw ComfyUI answer
        self.prompt_posted = False  # this run reached ComfyUI: it may still be running there
        # ComfyUI outlives the agent: after a restart it may hold a previous job's models.
        self._free_before_prompt = True

    @job_logs.stores_job_log
    def run(
        self, job: Job, stop: _Stop, timings: WorkerTimings, phases: JobPhases | None = None
    ) -> RunResult:
        self.prompt_posted = False
        try:
            return self._run(job, stop, timings, phases or JobPhases())
        except WorkerError as exc:
            if stop.lost:
                return RunResult(None, timings=timings)
            log.warning("job %s failed: %s", job.job_id, exc.message)
            # Bounded: ComfyUI's answer goes in verbatim, and done.json must stay valid.
            error = reported_error(exc.job_error())
            return RunResult(DoneStatus.FAILED, error=error, timings=timings)
        except Exception as exc:
            # A bug or an environment failure (disk full, storage, network): the job fails
            # rather than the agent, which systemd would restart into the same job forever.
            log.exception("job %s: unexpected error", job.job_id)
            if stop.lost:
                return RunResult(None, timings=timings)
            # Only the type: the text of a requests error can hold a URL with its token.
            error = JobError(
                type="worker_error", message=f"unexpected worker error ({type(exc).__name__})"
            )
            return RunResult(DoneStatus.FAILED, error=error, timings=timings)

    @staticmethod
    def stop_for(job: Job, comfy: ComfyClient, clock: Clock) -> _Stop:
        remaining = (job.deadline_at - clock.now()).total_seconds()
        return _Stop(comfy, time.monotonic() + remaining)

    def _run(self, job: Job, stop: _Stop, timings: WorkerTimings, phases: JobPhases) -> RunResult:
        request = self._request(job)
        self.ready_environment(job, timings, phases)
        if stop.check():
            return self._stopped(stop, timings)
        t0 = time.monotonic()
        try:
            self._models(request, timings, stop)
        except WorkerError:
            if stop.check():
                return self._stopped(stop, timings)
            raise
        timings.model_fetch_s = round(time.monotonic() - t0, 4)
        phases.models_ready_at = self.s.clock.now()
        if stop.check():
            return self._stopped(stop, timings)
        if not self._comfy_ready:
            self.s.comfy.wait_ready(self.s.settings.comfyui_ready_timeout_s)
            self._comfy_ready, self.comfy_seen_at = True, self.s.clock.now()
        if self._free_before_prompt:
            # A model name now leads to other bytes than ComfyUI may have loaded under it.
            self.s.comfy.free()
            self._free_before_prompt = False
        accepted = list(getattr(job, "accepted_outputs", None) or [])
        workflow = prompt_scope.rerun_outputs(
            prompt_scope.prune(self._inputs(job, request), accepted), accepted, job.job_id
        )
        if stop.check():
            return self._stopped(stop, timings)
        tracker, progress = self._execute(job, workflow, stop, timings)
        try:
            return self._ended(job, request, tracker, accepted, stop, timings, phases)
        finally:
            # A success's last progress write overlapped the output upload; it lands before
            # the run's result, so before the done flag.
            progress.join()

    def _ended(
        self,
        job: Job,
        request: JobRequest,
        tracker: RunTracker,
        accepted: list[str],
        stop: _Stop,
        timings: WorkerTimings,
        phases: JobPhases,
    ) -> RunResult:
        """The result of a prompt ComfyUI ran: the outputs stored, or why not."""
        if tracker.first_step_s is not None:
            phases.first_step_at = datetime.fromtimestamp(tracker.first_step_s, UTC)
        if tracker.outcome is Outcome.SUCCESS and tracker.done:
            t1 = time.monotonic()
            entry = self.s.follower.history_after(tracker)
            _history_times(entry, tracker)
            ran = entry.get("outputs") or tracker.outputs
            extra = prompt_scope.unaccepted([*ran, *tracker.outputs], accepted)
            if extra:
                raise ExecutionFailed(
                    f"ComfyUI reports outputs pre-flight did not accept: {', '.join(extra)}"
                )
            collector = OutputCollector(self.s.comfy, self.s.blobs, self.s.config.outputs_bucket)
            outputs = collector.collect(job.job_id, ran, request.options.output_format)
            timings.upload_s = round(time.monotonic() - t1, 4)
            _exec_times(tracker, timings)
            return RunResult(DoneStatus.SUCCEEDED, outputs=outputs, timings=timings)
        _exec_times(tracker, timings)
        if tracker.outcome is Outcome.ERROR:
            raise execution_error(tracker.failure or {})
        if stop.check():
            return self._stopped(stop, timings)
        raise ExecutionFailed("ComfyUI interrupted the run (not at our request)")

    def _stopped(self, stop: _Stop, timings: WorkerTimings) -> RunResult:
        if stop.lost or stop.reason is None:
            return RunResult(None, timings=timings)
        error = None
        if stop.reason is DoneStatus.TIMED_OUT:
            error = JobError(type="timed_out", message="the job passed its deadline")
        return RunResult(stop.reason, error=error, timings=timings)

    def _request(self, job: Job) -> JobRequest:
        name = f"jobs/{job.job_id}/request.json"
        raw = self.s.blobs.read(self.s.config.jobs_bucket, name)
        if raw is None:
            raise InputError(f"gs://{self.s.config.jobs_bucket}/{name} is missing")
        try:
            return JobRequest.model_validate_json(raw)
        except ValidationError as exc:
            errors = exc.error_count()
            raise InputError(f"request.json does not validate: {errors} errors") from None

    def ready_environment(self, job: Job, timings: WorkerTimings, phases: JobPhases) -> None:
        """ComfyUI runs the job's environment or the base (a build job's: the base), restarted
        if need be; raises EnvironmentNotReady. The receipt shows the readying for a job naming
        an environment and for any job whose run restarted ComfyUI (back to the base after
        another's environment: those seconds are this job's too)."""
        ready = ready_for_job(self.s.env, job, self.s.leases)
        if ready.restarted:
            # A fresh ComfyUI: no models loaded, and the websocket went with the old process.
            self._comfy_ready, self._free_before_prompt = True, False
            self.s.follower.close()
        if job.options.environment is not None or ready.restarted:
            timings.environment_s, timings.environment_downloaded = ready.seconds, ready.downloaded
            phases.environment_ready_at = self.s.clock.now()

    def _models(self, request: JobRequest, timings: WorkerTimings, stop: _Stop) -> None:
        results = self._fetch_models(request, stop) if request.models else []
        if self.s.view.show({r.key: r.blob for r in results}):
            self._free_before_prompt = True
        if not results:
            return
        timings.model_cache_hits = sum(r.cache_hit for r in results)
        timings.model_downloads = sum(not r.cache_hit for r in results)
        timings.model_bytes_downloaded = sum(r.bytes_downloaded for r in results)
        if timings.model_downloads:
            self.s.leases.add_models(r.key for r in results)

    def _fetch_models(self, request: JobRequest, stop: _Stop) -> list[EnsureResult]:
        """Every model in the store; a cancel or the deadline stops the downloads within one
        poll interval (the watcher below sets `cancel`, which shuts their sockets)."""
        cancel = Cancel()
        done = threading.Event()
        poll_s = self.s.settings.job_poll_interval_s

        def watch() -> None:
            while not done.wait(poll_s):
                if stop.check():
                    cancel.set()
                    return

        watcher = threading.Thread(target=watch, name="model-stop", daemon=True)
        watcher.start()
        workers = min(self.s.settings.model_fetch_workers, len(request.models))
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model") as pool:
                futures = [pool.submit(self.s.cache.ensure, m, cancel) for m in request.models]
                try:
                    return [future.result() for future in futures]
                except BaseException:
                    cancel.set()  # one model failed: the job fails, stop the others now
                    raise
        finally:
            done.set()
            watcher.join()

    def _inputs(self, job: Job, request: JobRequest) -> dict[str, Any]:
        workflow = request.workflow_dict()
        if not request.inputs and not job.request.input_names:
            return workflow
        embedded = {i.name: i for i in request.inputs}
        subfolder = f"comfyburst/{job.job_id}"
        refs: dict[str, str] = {}
        for name in job.request.input_names or list(embedded):
            data = self.s.blobs.read(self.s.config.jobs_bucket, f"jobs/{job.job_id}/inputs/{name}")
            if data is None and name in embedded:
                data = embedded[name].decode()
            if data is None:
                raise InputError(f"input {name} is missing from the jobs bucket")
            refs[name] = self._place_input(name, data, subfolder)
        return rewrite_inputs(workflow, refs)

    def _place_input(self, name: str, data: bytes, subfolder: str) -> str:
        # Straight into ComfyUI's input folder, which the agent empties between jobs.
        place_input(Path(self.s.folders.input), subfolder, name, data)
        return f"{subfolder}/{name}"

    def _execute(
        self, job: Job, workflow: dict[str, Any], stop: _Stop, timings: WorkerTimings
    ) -> tuple[RunTracker, ProgressWriter[Progress]]:
        """Post the prompt and follow it to its end; the progress writer comes back closed
        (after a success its last write may still be in flight: join it)."""
        prompt_id = str(uuid.uuid4())
        tracker = RunTracker(prompt_id=prompt_id, node_count=len(workflow))
        follower = self.s.follower
        follower.ensure_connected()
        posted = time.time()
        self.prompt_posted = True
        answer = self.s.comfy.post_prompt(workflow, follower.client_id, prompt_id)
        if answer.status != 200:
            raise prompt_error(answer.status, answer.body, workflow)
        if answer.body.get("node_errors"):
            # ComfyUI accepted it and runs the outputs that validated, as pre-flight told the
            # caller at submit time (`preflight_node_errors` on the job).
            log.warning(
                "job %s: outputs that do not validate are skipped: %s",
                job.job_id,
                sorted(answer.body["node_errors"]),
            )
        stop.attach(prompt_id)
        interval_s = self.s.settings.progress_min_interval_s
        writer = ProgressWriter(self._progress_writer(job.job_id), interval_s)
        bucket = self.s.config.outputs_bucket
        previews = PreviewForwarder(self.s.blobs, bucket, job.job_id, prompt_id)
        followed = False
        try:
            follower.follow(tracker, writer.submit, stop.check, on_binary=previews.offer)
            followed = True
        finally:
            final = tracker.progress() if tracker.outcome is Outcome.SUCCESS else None
            # After a success the last write goes on the writer's thread, beside the output
            # upload (`_run` joins it); otherwise it is made here.
            writer.close(final, wait=not (followed and final is not None))
            previews.close()
        if tracker.start_ms is not None:
            timings.queue_wait_s = round(max(0.0, tracker.start_ms / 1000 - posted), 4)
        return tracker, writer

    def _progress_writer(self, job_id: str) -> Callable[[Progress], None]:
        store = self.s.store

        def write(progress: Progress) -> None:
            store.patch_job(job_id, {"progress": progress.model_dump(mode="json")})

        return write


def rewrite_inputs(workflow: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
    """Point image-loading inputs at the names ComfyUI stored the uploads under."""
    for node in workflow.values():
        if not str(node.get("class_type", "")).startswith("Load"):
            continue
        inputs = node.get("inputs") or {}
        for key, value in inputs.items():
            if isinstance(value, str) and value in refs:
                inputs[key] = refs[value]
    return workflow


def _history_times(entry: dict[str, Any], tracker: RunTracker) -> None:
    messages = (entry.get("status") or {}).get("messages") or []
    for event, data in messages:
        stamp = data.get("timestamp") if isinstance(data, dict) else None
        if stamp is None:
            continue
        if event == "execution_start":
            tracker.start_ms = int(stamp)
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            tracker.end_ms = int(stamp)


def _exec_times(tracker: RunTracker, timings: WorkerTimings) -> None:
    if tracker.start_ms is not None and tracker.end_ms is not None:
        timings.execution_s = round(max(0, tracker.end_ms - tracker.start_ms) / 1000, 4)
