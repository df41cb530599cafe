"""Environments of custom-node packs: ask for one, read one, list the caller's, and check the
one a job names. Every refusal happens before anything is written.

First layer: a new environment is stored `building`, and nothing builds it yet; the GPU-side
build, the archive cache and routing are the next layers (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from comfyburst.domain.custom_node_sources import SourcePolicy
from comfyburst.domain.environments import (
    MAX_PACKS,
    Environment,
    EnvironmentInvalid,
    EnvironmentNotFound,
    can_see,
    check_enabled,
    check_usable,
    plan_environment,
)
from comfyburst.domain.json_safety import field_path, parse_json_body
from comfyburst.errors import PayloadTooLarge
from comfyburst.ports import Clock, EnvironmentStore

MAX_ENVIRONMENT_BODY_BYTES = 64 * 1024
MAX_LISTED = 100


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
        self.sources = SourcePolicy.of(settings.custom_node_sources)
        self.trusted = SourcePolicy.of(settings.trusted_custom_node_sources)
        self.comfyui_commit: str = settings.comfyui_commit

    def check_enabled(self) -> None:
        check_enabled(self.sources)


def create_environment(
    store: EnvironmentStore, settings: Any, clock: Clock, body: bytes, *, caller: str | None
) -> tuple[Environment, bool]:
    """The environment of the requested packs: the stored one, or a new one (building)."""
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
    )
    return store.create(planned.new_document(clock.now()), caller)


def get_environment(
    store: EnvironmentStore,
    environment_id: str,
    *,
    caller: str | None,
    admins: Collection[str],
) -> Environment:
    """The environment, if the caller may see it; another's private one is not found."""
    env = store.get(environment_id)
    if env is None or not can_see(caller, env, admins):
        raise EnvironmentNotFound("environment not found")
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
    EnvironmentPolicy(settings).check_enabled()
    return check_usable(store.get(environment_id) if store is not None else None, caller)


def _schema_error(exc: ValidationError) -> EnvironmentInvalid:
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    field = field_path(tuple(first["loc"]))
    return EnvironmentInvalid(f"{field or 'request'}: {first['msg'][:500]}", field=field)
