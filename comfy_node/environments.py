"""The GPU environment for node types the GPU image lacks: the local packs they come from, asked
for as one environment (`POST /environments`), waited for while it is built, then named by the
job (`options.environment`). Every refusal is a message that says why and what to do."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ._vendor.comfyburst_core.client import ApiClient, ApiError
from ._vendor.comfyburst_core.custom_nodes import Pack, PackDirty, PackError, pack_source
from .missing_nodes import BAKE_ADVICE

BUILDING = "building the GPU environment (first time)"
# GET /environments/{id} has no long wait: asked this often while a build runs.
POLL_S = 5.0
# A build job times out after an hour (the API then fails the environment); a margin over it.
WAIT_LIMIT_S = 4200.0


class EnvironmentRefused(RuntimeError):
    """No environment for these node types; the message says why and what to do."""


class EnvironmentWaitCancelled(RuntimeError):
    """The user pressed Cancel while the environment was being built (the build goes on)."""


def pack_text(pack: Pack) -> str:
    """`URL@COMMIT` (a registry install: `ID@VERSION`) of a local pack as an environment names
    it (the core's rule, local changes refused); refused with the reason and what to do."""
    try:
        return pack_source(pack)
    except PackDirty as exc:
        raise EnvironmentRefused(
            f"{exc}. Commit and push them (or undo them), then queue again."
        ) from None
    except PackError:
        raise EnvironmentRefused(
            f"{pack.name} ({pack.folder}) is not a git checkout with a remote (origin) and a "
            "commit: the GPU builds a pack from its git repository. Install it with "
            "`git clone`, or add it to the GPU image's bake list."
        ) from None


def packs_for(missing: list[str], pack_of: Callable[[str], Pack | None]) -> list[str]:
    """The pinned packs the missing node types come from, each once, in the types' order."""
    texts: list[str] = []
    for class_type in missing:
        pack = pack_of(class_type)
        if pack is None:
            raise EnvironmentRefused(
                f"{class_type} is not from a custom-node pack found here, so no GPU environment "
                f"can bring it. {BAKE_ADVICE}"
            )
        text = pack_text(pack)
        if text not in texts:
            texts.append(text)
    return texts


def _refusal(exc: ApiError, packs: list[str]) -> EnvironmentRefused:
    if exc.code == "environments_disabled":
        return EnvironmentRefused(
            "This ComfyBurst deployment builds no custom-node environments (its deployer has "
            f"not opened custom_node_sources). Ask them to allow these packs, or: {BAKE_ADVICE}"
        )
    if exc.code == "pack_not_allowed":
        return EnvironmentRefused(
            f"The deployment does not allow this pack: {exc.message}. Ask its deployer to add "
            f"its source to custom_node_sources, or: {BAKE_ADVICE}"
        )
    if exc.code == "registry_not_configured":
        return EnvironmentRefused(
            f"The deployment fetches no Comfy registry packs: {exc.message}. Ask its deployer "
            f"to set custom_node_registry_url, or: {BAKE_ADVICE}"
        )
    listed = ", ".join(packs)
    return EnvironmentRefused(
        f"ComfyBurst refused the environment of {listed} ({exc.status} {exc.code}): {exc.message}"
    )


def failed_message(env: dict[str, Any]) -> str:
    """A failed build in words: the pack and the last lines of its error (the API's text)."""
    why = env.get("error") or "no details"
    return f"The GPU environment {env.get('id')} failed to build: {why}"


def ask_environment(client: ApiClient, packs: list[str]) -> dict[str, Any]:
    """The environment of `packs` (building, or ready); refused with the reason otherwise."""
    try:
        env = client.create_environment(packs)
    except ApiError as exc:
        raise _refusal(exc, packs) from exc
    if env.get("state") == "failed":
        raise EnvironmentRefused(failed_message(env))
    return env


def _repo_name(pack: str) -> str:
    """`REPO` of `…/OWNER/REPO@COMMIT` (a registry pack: its id)."""
    return pack.rpartition("@")[0].rstrip("/").rpartition("/")[2]


def environment_for(
    client: ApiClient, missing: list[str], pack_of: Callable[[str], Pack | None]
) -> dict[str, Any]:
    """The environment holding the packs of the missing node types (asked for, maybe new)."""
    return ask_environment(client, packs_for(missing, pack_of))


def building_text(env: dict[str, Any], elapsed_s: float) -> str:
    """What the user is told while the environment is built: which packs, for how long."""
    names = ", ".join(_repo_name(str(p)) for p in env.get("packs") or [])
    minutes, seconds = divmod(int(elapsed_s), 60)
    took = f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
    return f"{BUILDING}: {names or env.get('id')} — {took}; the job starts once it is built"


def wait_ready(
    client: ApiClient,
    environment_id: str,
    *,
    on_status: Callable[[str], None],
    interrupted: Callable[[], bool] = lambda: False,
    poll_s: float | None = None,
    limit_s: float = WAIT_LIMIT_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the environment until it is ready, telling `on_status` how the build goes."""
    poll_s = POLL_S if poll_s is None else poll_s
    began = clock()
    while True:
        try:
            env = client.get_environment(environment_id)
        except ApiError as exc:
            raise EnvironmentRefused(
                f"The GPU environment {environment_id} cannot be read ({exc.status} {exc.code}): "
                f"{exc.message}"
            ) from exc
        state = env.get("state")
        if state == "ready":
            return env
        if state == "failed":
            raise EnvironmentRefused(failed_message(env))
        elapsed = clock() - began
        if elapsed > limit_s:
            raise EnvironmentRefused(
                f"The GPU environment {environment_id} is still {state} after {int(elapsed)} s"
            )
        on_status(building_text(env, elapsed))
        # Cancel is asked every second: a build may run for minutes.
        waited = 0.0
        while waited < poll_s:
            if interrupted():
                raise EnvironmentWaitCancelled(
                    f"Cancelled while {BUILDING} ({environment_id}); the build goes on"
                )
            step = min(1.0, poll_s - waited)
            sleep(step)
            waited += step


def environment_notice(env: dict[str, Any]) -> dict[str, Any]:
    """What the browser is told of the environment a queued prompt runs in; `message` is set
    while it is being built."""
    building = env.get("state") == "building"
    names = ", ".join(_repo_name(str(p)) for p in env.get("packs") or [])
    return {
        "id": env.get("id"),
        "state": env.get("state"),
        "packs": env.get("packs") or [],
        "message": f"{BUILDING}: {names}; the job starts once it is built" if building else None,
    }
