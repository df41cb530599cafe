"""Environments of custom-node packs: ask for one, read one, list the caller's, and check the
one a job names. Every refusal happens before anything is written.

Build: a new environment is stored `building` and a build job is queued for it through the
job pipeline (dispatch, leases, retries, reaper, done flag, completion: `queue_build`); the
job belongs to the environment's creator, runs on the default GPU class, carries the packs
instead of a workflow, and its id is derived from the environment's, so asking again never
queues a second one. Its end marks the environment (`record_build`); a build job that ended
without reporting (the reaper's timeout, its attempts used up) is noticed when the environment
is read or asked for again. The archive cache on other VMs and routing are the next layers.
A caller's `max_environments` (domain/caller_limits.py) bounds the environments it asks for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from comfyburst.domain import gpu_classes
from comfyburst.domain.caller_limits import CallerLimits, check_environments
from comfyburst.domain.custom_node_sources import SourcePolicy
from comfyburst.domain.environments import (
    MAX_PACKS,
    Environment,
    EnvironmentInvalid,
    EnvironmentNotFound,
    EnvironmentState,
    can_see,
    check_enabled,
    check_still_allowed,
    check_usable,
    finish_build,
    plan_environment,
)
from comfyburst.domain.json_safety import field_path, parse_json_body
from comfyburst.errors import JobExists, PayloadTooLarge
from comfyburst.ports import Clock, EnvironmentStore, JobStore
from comfyburst.preflight import Catalogue
from comfyburst.schema import (
    DoneManifest,
    EnvironmentBuild,
    Job,
    JobOptions,
    RequestSummary,
)
from comfyburst.states import JobState

MAX_ENVIRONMENT_BODY_BYTES = 64 * 1024
MAX_LISTED = 100
BUILD_TIMEOUT_S = 3600


class EnvironmentRequest(BaseModel):
    """`POST /environments`: the packs, each `https://HOST/OWNER/REPO@COMMIT` or `ID@VERSION`."""

    model_config = ConfigDict(extra="forbid")

    packs: list[str] = Field(
        min_length=1,
        max_length=MAX_PACKS,
        description="Pinned packs; order and repetition do not matter.",
    )


class EnvironmentPolicy:
    """The deployer's lists and the image's ComfyUI commit, parsed once from the settings."""

    def __init__(self, settings: Any) -> None:
        # The URL rule's loopback allowance (the local cloud's git server; empty when deployed).
        self.test_hostports = tuple(
            h.strip().lower() for h in getattr(settings, "http_model_hosts", None) or ()
        )
        self.sources = SourcePolicy.of(settings.custom_node_sources, self.test_hostports)
        self.trusted = SourcePolicy.of(settings.trusted_custom_node_sources, self.test_hostports)
        self.comfyui_commit: str = settings.comfyui_commit
        self.registry_configured = bool(getattr(settings, "custom_node_registry_url", None))

    def check_enabled(self) -> None:
        check_enabled(self.sources)


def create_environment(
    store: EnvironmentStore,
    settings: Any,
    clock: Clock,
    body: bytes,
    *,
    caller: str | None,
    builds: Any = None,
) -> tuple[Environment, bool]:
    """The environment of the requested packs: the stored one, or a new one (building).

    With `builds` (the submit use case's deps), a building environment's build job is queued
    if it is not yet (the first ask, or a crash between the two writes of an earlier one).
    """
    policy = EnvironmentPolicy(settings)
    policy.check_enabled()
    if len(body) > MAX_ENVIRONMENT_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_ENVIRONMENT_BODY_BYTES} bytes")
    data = parse_json_body(body)
    try:
        request = EnvironmentRequest.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(exc) from None
    planned = plan_environment(
        request.packs,
        sources=policy.sources,
        trusted=policy.trusted,
        comfyui_commit=policy.comfyui_commit,
        caller=caller,
        test_hostports=policy.test_hostports,
        registry_configured=policy.registry_configured,
    )
    _check_environment_limit(store, settings, planned.environment_id, caller)
    env, created = store.create(planned.new_document(clock.now()), caller)
    if builds is None:
        return env, created
    env = reconcile_build(store, builds.store, env, clock.now())
    queued = queue_build(builds, env, caller=caller)
    if queued is not None:
        env = store.update(env.environment_id, lambda e: _with_job(e, queued.job_id)) or env
    return env, created


def _check_environment_limit(
    store: EnvironmentStore, settings: Any, environment_id: str, caller: str | None
) -> None:
    """403 `environment_limit_reached` for an environment new to a caller at its
    `max_environments`. Two concurrent asks of one caller may both pass at the limit minus one
    (a soft bound, counted from the access records; the cap is against runaway scripts)."""
    limits = (getattr(settings, "caller_limits", None) or CallerLimits()).for_caller(caller)
    if limits.max_environments is None or store.asked_by(caller, environment_id):
        return
    check_environments(limits, store.count_for(caller))


def _with_job(env: Environment, job_id: str) -> Environment | None:
    return None if env.build_job_id == job_id else env.model_copy(update={"build_job_id": job_id})


def get_environment(
    store: EnvironmentStore,
    environment_id: str,
    *,
    caller: str | None,
    admins: Collection[str],
    jobs: JobStore | None = None,
    clock: Clock | None = None,
) -> Environment:
    """The environment, if the caller may see it; another's private one is not found. With
    `jobs`, a building one whose build job ended without a result is failed first."""
    env = store.get(environment_id)
    if env is None or not can_see(caller, env, admins):
        raise EnvironmentNotFound("environment not found")
    if jobs is not None and clock is not None:
        env = reconcile_build(store, jobs, env, clock.now())
    return env


def list_environments(store: EnvironmentStore, *, caller: str | None) -> list[Environment]:
    """The environments the caller asked for, most recently asked first (at most 100)."""
    return store.list_for(caller, MAX_LISTED)


def check_job_environment(
    store: EnvironmentStore | None, settings: Any, environment_id: str | None, caller: str | None
) -> Environment | None:
    """The environment a job names, if it may run in it now; None: the image's own nodes."""
    if environment_id is None:
        return None
    policy = EnvironmentPolicy(settings)
    policy.check_enabled()
    env = check_usable(store.get(environment_id) if store is not None else None, caller)
    check_still_allowed(env, policy.sources, policy.trusted, policy.test_hostports)
    return env


def _schema_error(exc: ValidationError) -> EnvironmentInvalid:
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    field = field_path(tuple(first["loc"]))
    return EnvironmentInvalid(f"{field or 'request'}: {first['msg'][:500]}", field=field)


def build_job_id(environment_id: str) -> str:
    """The build job's id: derived from the environment's, so one environment has one."""
    return hashlib.sha256(f"environment-build\n{environment_id}".encode()).hexdigest()[:32]


def queue_build(deps: Any, env: Environment, *, caller: str | None) -> Job | None:
    """Queue (once) the job that builds `env`; `deps` is the submit use case's (SubmitDeps).

    None when the environment is not building or its build job exists already.
    """
    if env.state is not EnvironmentState.BUILDING:
        return None
    settings, now = deps.settings, deps.clock.now()
    job = Job(
        job_id=build_job_id(env.environment_id),
        max_attempts=settings.max_attempts,
        request=RequestSummary(
            node_count=0, class_types=[], models=[], input_names=[], workflow_bytes=0
        ),
        options=JobOptions(timeout_s=BUILD_TIMEOUT_S),
        gpu_class=gpu_classes.for_settings(settings).resolve(None).name,
        created_at=now,
        deadline_at=now + timedelta(seconds=BUILD_TIMEOUT_S),
        state_changed_at=now,
        expire_at=now + timedelta(days=settings.job_ttl_days),
        caller=caller,
        environment_build=EnvironmentBuild(
            environment_id=env.environment_id, packs=list(env.packs)
        ),
    )
    try:
        placement = deps.dispatcher.place_new(job)
    except JobExists:
        return None
    return placement.job or job


def record_build(
    store: EnvironmentStore | None, job: Job, manifest: DoneManifest | None, now: datetime
) -> Environment | None:
    """Mark the environment a terminal build job built: ready or failed (once)."""
    build = job.environment_build
    if store is None or build is None or not job.state.terminal:
        return None
    built = manifest.environment_built if manifest is not None else None
    if job.state is JobState.SUCCEEDED and built is not None:
        if built.environment_id != build.environment_id:
            error: str | None = "the build reported another environment"
        else:
            error = None
        return store.update(
            build.environment_id,
            lambda env: finish_build(
                env,
                now,
                node_types=built.node_types,
                archive=built.archive,
                error=error,
                object_info_json=built.object_info_json,
            ),
        )
    why = job.error.message if job.error is not None else f"the build job ended {job.state.value}"
    return store.update(build.environment_id, lambda env: finish_build(env, now, error=why))


def reconcile_build(
    store: EnvironmentStore, jobs: JobStore | None, env: Environment, now: datetime
) -> Environment:
    """A building environment whose build job ended without a result (the reaper timed it
    out, its attempts ran out) is failed; anything else is returned as it is."""
    if env.state is not EnvironmentState.BUILDING or jobs is None:
        return env
    job = jobs.get_job(build_job_id(env.environment_id))
    # A succeeded one is marked by its done flag's completion (the trigger's or the reaper's),
    # which alone knows what it built.
    if job is None or not job.state.terminal or job.state is JobState.SUCCEEDED:
        return env
    return record_build(store, job, None, now) or env


def with_environment(base: Catalogue, env: Environment) -> Catalogue:
    """Pre-flight's catalogue for a job in `env`: the image's node types and the packs'."""
    if not env.object_info_json:
        return base
    extra = Catalogue.from_json_bytes(env.object_info_json.encode())
    classes = {name: spec for name in base if (spec := base.get(name)) is not None}
    classes.update({name: spec for name in extra if (spec := extra.get(name)) is not None})
    return Catalogue(classes)
