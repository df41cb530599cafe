"""Which environment ComfyUI runs, and switching it before a job: the layer on disk, the active
layer file ComfyUI's start reads, the restart, and proof that the restarted ComfyUI serves the
environment's node types.

Isolation: a private environment's ComfyUI process never runs another caller's job
(`must_restart`), and before any restart every private layer on disk but the one ComfyUI is
restarted into is deleted (`layers_to_delete`; so a layer ComfyUI leaves is gone before any
later pack code runs, and so are those a reboot left). An environment ComfyUI was running
before this agent started (the file says so) is of an unknown owner: the first job restarts
ComfyUI, and that layer is deleted as a private one would be; so is one the file marks as a
switch the agent did not see through (it may have died before the old process stopped).
Another caller's private layer is never downloaded while such a process runs (back to the base
first), and an agent that starts on the base deletes the private layers a reboot left.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from comfyburst.schema import Job
from comfyburst_worker.claims import LeaseKeeper
from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.env_layers import EnvironmentNotReady, Layer, LayerCache
from comfyburst_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

UNKNOWN_OWNER = "\x00unknown"  # never a caller: a process of unknown history serves nobody


class SwitchUnsupported(EnvironmentNotReady):
    """This VM cannot restart ComfyUI (no restart command), so it runs no environment."""

    error_type = "environment_unsupported"


class RestartFailed(EnvironmentNotReady):
    """The restart command failed, or ComfyUI did not come back."""

    error_type = "environment_restart"


class NodeTypesAbsent(EnvironmentNotReady):
    """ComfyUI came back without the environment's node types (a pack failed to load)."""

    error_type = "environment_not_loaded"


@dataclass(frozen=True)
class Loaded:
    """What the running ComfyUI process loaded: an environment (None: the base) and, for a
    private one, its owner (the only caller whose jobs it may run)."""

    environment_id: str | None = None
    owner: str | None = None


def must_restart(loaded: Loaded, environment_id: str | None, caller: str | None) -> bool:
    """Whether caller `caller`'s job in `environment_id` (None: the base) needs a fresh
    ComfyUI: another environment, or a private one of another owner, is loaded."""
    if loaded.environment_id != environment_id:
        return True
    return loaded.owner is not None and loaded.owner != caller


def layers_to_delete(
    loaded: Loaded, private_on_disk: Iterable[str], next_environment_id: str | None
) -> list[str]:
    """The layers to delete before ComfyUI starts in `next_environment_id`: every private
    layer but that one, and the one it leaves if that was private or of unknown owner."""
    doomed = {e for e in private_on_disk if e != next_environment_id}
    left = loaded.environment_id
    if loaded.owner is not None and left not in (None, UNKNOWN_OWNER, next_environment_id):
        doomed.add(str(left))
    return sorted(doomed)


@dataclass(frozen=True)
class Ready:
    """A job's environment is ready: how long it took and whether its layer was downloaded."""

    seconds: float = 0.0
    downloaded: bool = False
    restarted: bool = False


def write_layer_file(path: Path, layer: Layer | None, switching: bool = False) -> None:
    """The active layer file, replaced atomically (a reader sees the old or the new one).

    `switching`: written before the restart, until ComfyUI is proven to serve the layer; an
    agent that starts on such a file does not know what ComfyUI loaded (the old process may
    still run) and treats it as of unknown owner."""
    site = layer.site_packages if layer is not None else None
    body: dict[str, object] = {
        "environment_id": layer.environment_id if layer is not None else None,
        # Absolute: ComfyUI's start (another working directory) refuses relative ones.
        "custom_nodes": str(layer.custom_nodes.absolute()) if layer is not None else None,
        "site_packages": str(site.absolute()) if site is not None else None,
    }
    if switching:
        body["switching"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(body, sort_keys=True))
    os.chmod(tmp, 0o644)  # ComfyUI's user reads it; only the worker writes it
    os.replace(tmp, path)


def read_layer_file(path: Path) -> str | None:
    """The environment the file names (None: absent or the base); unreadable: unknown."""
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return UNKNOWN_OWNER
    if not isinstance(body, dict) or body.get("switching"):
        return UNKNOWN_OWNER  # a switch the agent did not see through
    value = body.get("environment_id")
    return str(value) if value is not None else None


Runner = Callable[..., subprocess.CompletedProcess[str]]


class ComfyEnv:
    """Switches the local ComfyUI between environments before jobs."""

    def __init__(
        self,
        layers: LayerCache,
        comfy: ComfyClient,
        layer_file: Path,
        restart_argv: Sequence[str],
        ready_timeout_s: float,
        run: Runner = subprocess.run,
        settle_s: float = 15.0,
    ) -> None:
        self.layers, self.comfy, self.layer_file = layers, comfy, layer_file
        self.restart_argv, self.ready_timeout_s = tuple(restart_argv), ready_timeout_s
        self.run, self.settle_s = run, settle_s
        self.loaded = Loaded()
        self._reported: set[str] | None = None

    @classmethod
    def of_settings(
        cls, settings: WorkerSettings, layers: LayerCache, comfy: ComfyClient
    ) -> ComfyEnv:
        return cls(
            layers,
            comfy,
            Path(settings.comfyui_layer_file),
            shlex.split(settings.comfyui_restart_command or ""),
            settings.comfyui_ready_timeout_s,
        )

    def start(self) -> None:
        """At agent start: drop what interrupted unpacks left, and learn what ComfyUI runs."""
        self.layers.clear_partials()
        running = read_layer_file(self.layer_file)
        self.loaded = Loaded(running, UNKNOWN_OWNER) if running is not None else Loaded()
        if running is None:
            # The base runs, and a build's pack code may run beside it before any restart:
            # no private layer a reboot left stays on disk until then.
            for doomed in self.layers.private():
                self.layers.remove(doomed)

    def prepare(self, environment_id: str | None, private: bool, caller: str | None) -> Ready:
        """Make ComfyUI run `environment_id` (None: the base) for `caller`'s job."""
        if not must_restart(self.loaded, environment_id, caller):
            if environment_id is not None:
                self.layers.ensure(environment_id, private=private)  # marks it used (LRU)
            return Ready()
        if not self.restart_argv:
            raise SwitchUnsupported(
                "this VM cannot switch ComfyUI's environment (no restart command); "
                "it runs only the image's own custom nodes"
            )
        t0 = time.monotonic()
        previous = self.loaded
        if (
            private
            and environment_id is not None
            and previous.owner not in (None, caller)
            and self.layers.get(environment_id) is None
        ):
            # Another caller's private pack code (or code of unknown history) runs: back to the
            # base first, so this caller's private layer never lands on disk beside it.
            self.prepare(None, False, caller)
            previous = self.loaded
        layer = None
        if environment_id is not None:
            layer = self.layers.ensure(environment_id, [previous.environment_id], private)
        wanted = set(layer.node_types) if layer is not None else set()
        old = self._layer_of(previous.environment_id)
        gone = set(old.node_types) - wanted if old is not None else set()
        write_layer_file(self.layer_file, layer, switching=True)
        # Until proven otherwise, the process is of unknown history.
        self.loaded = Loaded(UNKNOWN_OWNER, UNKNOWN_OWNER)
        # Before the restart: the next ComfyUI's pack code never sees another's private layer.
        for doomed in layers_to_delete(previous, self.layers.private(), environment_id):
            self.layers.remove(doomed)
        self._restart()
        self._check(wanted, gone)
        write_layer_file(self.layer_file, layer)
        self.loaded = Loaded(environment_id, caller if private else None)
        return Ready(
            round(time.monotonic() - t0, 4),
            downloaded=layer is not None and layer.downloaded,
            restarted=True,
        )

    def report(self, leases: LeaseKeeper) -> None:
        """Put the layers on disk on this VM's document (placement prefers VMs holding a
        job's environment), when they changed since the last report."""
        on_disk = set(self.layers.present())
        if on_disk != (self._reported or set()):
            leases.set_environments(sorted(on_disk))
        self._reported = on_disk

    def _restart(self) -> None:
        try:
            done = self.run(
                list(self.restart_argv),
                capture_output=True,
                text=True,
                timeout=self.ready_timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RestartFailed(f"restarting ComfyUI failed ({type(exc).__name__})") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout or "").strip()[-300:]
            raise RestartFailed(f"restarting ComfyUI failed (exit {done.returncode}): {tail}")
        log.info("ComfyUI restarted (%s)", " ".join(self.restart_argv))

    def _layer_of(self, environment_id: str | None) -> Layer | None:
        if environment_id is None or environment_id == UNKNOWN_OWNER:
            return None
        return self.layers.get(environment_id)

    def _check(self, wanted: set[str], gone: set[str]) -> None:
        """ComfyUI answers again and serves the `wanted` node types and none of the `gone`
        ones (those of the environment it left that the next one does not have). ComfyUI
        loads its custom nodes before it listens: `settle_s` only covers a restart command
        that returns before the old process is gone."""
        try:
            self.comfy.wait_ready(self.ready_timeout_s)
        except Exception as exc:
            raise RestartFailed(f"ComfyUI did not come back after its restart: {exc}") from None
        deadline = time.monotonic() + self.settle_s
        delay = 0.05
        while True:
            types = self._object_info_types()
            missing, stale = wanted - types, gone & types
            if not missing and not stale:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        if missing:
            raise NodeTypesAbsent(
                "ComfyUI restarted without the environment's node types: "
                + ", ".join(sorted(missing)[:20])
            )
        raise RestartFailed("ComfyUI still serves the previous environment's node types")

    def _object_info_types(self) -> set[str]:
        try:
            resp = self.comfy.session.get(f"{self.comfy.base_url}/object_info", timeout=30)
            body = resp.json() if resp.status_code == 200 else {}
        except (requests.RequestException, ValueError):
            return set()
        return set(body) if isinstance(body, dict) else set()


def ready_for_job(env: ComfyEnv | None, job: Job, leases: LeaseKeeper) -> Ready:
    """Ready ComfyUI for `job` (`env` None: a VM that runs only the image's own nodes)."""
    wanted = job.options.environment
    if env is None:
        if wanted is not None:
            raise SwitchUnsupported("this VM cannot run jobs in an environment")
        return Ready()
    ready = env.prepare(wanted, job.environment_private, job.caller)
    env.report(leases)
    return ready
