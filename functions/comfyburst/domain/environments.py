"""Environments: a set of pinned custom-node packs on top of the image's ComfyUI. Pure, no I/O.

An environment's id is `env-` and the sha256 of its canonical description: the packs' canonical
texts, sorted and without duplicates, and the image's ComfyUI commit. The same set is the same
id, whatever the order or repetition; one repository (or registry pack) at two refs is refused.

Private environments: a set with any pack outside the deployer's trusted sources is private to
its creator, and the creator is part of what its id hashes. So two callers asking for the same
untrusted set get two environments (two ids, built and run apart), one caller asking twice
gets the same one, and another caller's private environment answers exactly like a missing one.
A set of trusted packs only is shared: one id for everyone, readable by anyone who names it.

Build: a new environment is created `building` together with a build job of its creator
(services/environments.py); that job's end makes it `ready` (with its node types and the
layer's archive) or `failed` (`finish_build`). A job naming one is refused until it is
`ready`. The archive cache on other VMs and routing are the next layers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from comfyburst.domain.custom_node_sources import Pack, PackInvalid, SourcePolicy, parse_pack
from comfyburst.errors import Conflict, Forbidden, InvalidRequest, NotFound

ENV_ID_PREFIX = "env-"
ENV_ID_PATTERN = r"^env-[0-9a-f]{64}$"
MAX_PACKS = 64


class EnvironmentState(str, Enum):
    BUILDING = "building"  # created; its build job has not ended yet
    READY = "ready"  # built: its layer and catalogue are stored; jobs may name it
    FAILED = "failed"  # its build failed; `error` says which pack and why; jobs are refused


class EnvironmentsDisabled(Forbidden):
    """The deployment builds no custom nodes (`custom_node_sources` is empty)."""

    code = "environments_disabled"


class PackNotAllowed(Forbidden):
    """A pack outside the deployment's `custom_node_sources`."""

    code = "pack_not_allowed"


class RegistryNotConfigured(Forbidden):
    """A registry pack in a deployment that names no Comfy registry (custom_node_registry_url)."""

    code = "registry_not_configured"


class EnvironmentInvalid(InvalidRequest):
    """A malformed pack list: not pinned, not https, a repository at two commits, too many."""

    code = "environment_invalid"


class EnvironmentNotFound(NotFound):
    """No such environment, or another caller's private one (the same answer)."""


class EnvironmentUnusable(InvalidRequest):
    """A job names an environment it cannot run in: unknown, another caller's, or failed."""

    code = "environment_unusable"
    http_status = 422


class EnvironmentBuilding(Conflict):
    """A job names an environment that is not built yet (queued-until-ready: next layer)."""

    code = "environment_building"


class Environment(BaseModel):
    """The environment document, `environments/{environment_id}`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    environment_id: str = Field(pattern=ENV_ID_PATTERN)
    packs: list[str] = Field(description="Canonical pack texts, sorted.")
    comfyui_commit: str = Field(description="The image's ComfyUI commit the packs sit on.")
    state: EnvironmentState = EnvironmentState.BUILDING
    node_types: list[str] = Field(
        default_factory=list, description="Node types the packs add (known once built)."
    )
    error: str | None = Field(default=None, description="Why the build failed (failed only).")
    private: bool = Field(description="Holds a pack outside the trusted sources.")
    owner: str | None = Field(default=None, description="The creator of a private environment.")
    created_at: datetime
    state_changed_at: datetime
    build_job_id: str | None = Field(default=None, description="The job that builds it.")
    archive: str | None = Field(default=None, description="gs:// URI of the built layer.")
    object_info_json: str | None = Field(
        default=None, description="Its node types' `/object_info` as JSON text (pre-flight)."
    )


@dataclass(frozen=True)
class PlannedEnvironment:
    """What a request for a set of packs resolves to, before anything is stored."""

    environment_id: str
    packs: tuple[Pack, ...]
    comfyui_commit: str
    private: bool
    owner: str | None

    def new_document(self, now: datetime) -> Environment:
        """The document of a newly asked-for environment: building."""
        return Environment(
            environment_id=self.environment_id,
            packs=[p.text for p in self.packs],
            comfyui_commit=self.comfyui_commit,
            private=self.private,
            owner=self.owner,
            created_at=now,
            state_changed_at=now,
        )


def canonical_packs(texts: Sequence[str], test_hostports: tuple[str, ...] = ()) -> tuple[Pack, ...]:
    """The packs, canonical, sorted, without duplicates; EnvironmentInvalid (naming the field)
    for a malformed pack or one source at two refs."""
    if not texts:
        raise EnvironmentInvalid("an environment holds at least one pack", field="packs")
    if len(texts) > MAX_PACKS:
        raise EnvironmentInvalid(f"an environment holds at most {MAX_PACKS} packs", field="packs")
    packs: dict[str, Pack] = {}
    for index, text in enumerate(texts):
        try:
            pack = parse_pack(text, test_hostports=test_hostports)
        except PackInvalid as exc:
            raise EnvironmentInvalid(str(exc), field=f"packs.{index}") from None
        earlier = packs.setdefault(pack.source, pack)
        if earlier.ref != pack.ref:
            raise EnvironmentInvalid(
                f"{pack.source} is named at two refs ({earlier.ref}, {pack.ref}); pick one",
                field=f"packs.{index}",
            )
    return tuple(sorted(packs.values(), key=lambda p: p.text))


def environment_id(
    packs: Sequence[Pack], comfyui_commit: str, *, private: bool, owner: str | None
) -> str:
    """`env-` + sha256 of the canonical description (the owner only for a private one)."""
    description: dict[str, object] = {
        "comfyui_commit": comfyui_commit,
        "packs": sorted({p.text for p in packs}),
    }
    if private:
        description["private_to"] = owner
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return ENV_ID_PREFIX + hashlib.sha256(text.encode()).hexdigest()


def check_enabled(sources: SourcePolicy) -> None:
    """Refuse every environment request of a deployment that lists no sources."""
    if sources.empty:
        raise EnvironmentsDisabled(
            "this deployment builds no custom nodes (custom_node_sources is empty)"
        )


def plan_environment(
    texts: Sequence[str],
    *,
    sources: SourcePolicy,
    trusted: SourcePolicy,
    comfyui_commit: str,
    caller: str | None,
    test_hostports: tuple[str, ...] = (),
    registry_configured: bool = True,
) -> PlannedEnvironment:
    """Check a pack list against the deployer's policy and name its environment;
    `registry_configured` False refuses registry packs (the deployment names no registry)."""
    check_enabled(sources)
    packs = canonical_packs(texts, test_hostports)
    for pack in packs:
        if not sources.allows(pack):
            raise PackNotAllowed(
                f"{pack.source} is not among this deployment's custom_node_sources",
                field=_field(texts, pack, test_hostports),
            )
        if pack.kind == "registry" and not registry_configured:
            raise RegistryNotConfigured(
                f"{pack.text} is a registry pack and this deployment names no Comfy registry "
                "(custom_node_registry_url)",
                field=_field(texts, pack, test_hostports),
            )
    private = not all(trusted.allows(p) for p in packs)
    owner = caller if private else None
    env_id = environment_id(packs, comfyui_commit, private=private, owner=owner)
    return PlannedEnvironment(env_id, packs, comfyui_commit, private, owner)


def _field(texts: Sequence[str], pack: Pack, test_hostports: tuple[str, ...]) -> str:
    """`packs.N` of the first request entry that names `pack` (for a refusal)."""
    index = next(i for i, t in enumerate(texts) if _same(t, pack, test_hostports))
    return f"packs.{index}"


def _same(text: str, pack: Pack, test_hostports: tuple[str, ...] = ()) -> bool:
    try:
        return parse_pack(text, test_hostports=test_hostports) == pack
    except PackInvalid:
        return False


def can_see(caller: str | None, env: Environment, admins: Collection[str]) -> bool:
    """Anyone may read a shared environment; a private one only its owner and the admins."""
    if not env.private:
        return True
    return env.owner == caller or (caller is not None and caller in admins)


def check_usable(env: Environment | None, caller: str | None) -> Environment:
    """The environment a job of `caller` may run in; refuses (nothing is written) otherwise.

    Admins included, a private environment runs only its owner's jobs.
    """
    if env is None or (env.private and env.owner != caller):
        raise EnvironmentUnusable("no such environment (or not yours)", field="options.environment")
    if env.state is EnvironmentState.FAILED:
        raise EnvironmentUnusable(
            f"environment {env.environment_id} failed to build: {env.error or 'unknown'}",
            field="options.environment",
        )
    if env.state is EnvironmentState.BUILDING:
        raise EnvironmentBuilding(
            f"environment {env.environment_id} is still building; submit once it is ready",
            field="options.environment",
        )
    return env


def check_still_allowed(
    env: Environment,
    sources: SourcePolicy,
    trusted: SourcePolicy,
    test_hostports: tuple[str, ...] = (),
) -> None:
    """The deployer's lists as they are now, not as they were when it was built: a pack whose
    source was removed runs no more jobs, and a shared environment with a pack no longer trusted
    runs none either (asked for again, the same packs make a private one)."""
    packs = canonical_packs(env.packs, test_hostports)
    for pack in packs:
        if not sources.allows(pack):
            raise EnvironmentUnusable(
                f"{pack.source} is no longer among this deployment's custom_node_sources",
                field="options.environment",
            )
    if not env.private and not all(trusted.allows(p) for p in packs):
        raise EnvironmentUnusable(
            "this shared environment holds a pack whose source is no longer trusted; ask for "
            "the environment again (POST /environments) to get your own",
            field="options.environment",
        )


MAX_ERROR_CHARS = 2000


def finish_build(
    env: Environment,
    now: datetime,
    *,
    node_types: Sequence[str] | None = None,
    archive: str | None = None,
    error: str | None = None,
    object_info_json: str | None = None,
) -> Environment | None:
    """`env` once its build ended: ready with its catalogue, or failed with why. None: it had
    already ended (a redelivered or late result changes nothing)."""
    if env.state is not EnvironmentState.BUILDING:
        return None
    if error is None and node_types and archive:
        return env.model_copy(
            update={
                "state": EnvironmentState.READY,
                "node_types": sorted(set(node_types)),
                "archive": archive,
                "object_info_json": object_info_json,
                "error": None,
                "state_changed_at": now,
            }
        )
    why = (error or "the build reported no node types").strip()[:MAX_ERROR_CHARS]
    return env.model_copy(
        update={"state": EnvironmentState.FAILED, "error": why, "state_changed_at": now}
    )
