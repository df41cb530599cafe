"""Jobs run in their environment, end to end on the local cloud (issue #24, layer 3): two
callers, one pool VM (worker + ComfyUI stand-in), packs made here as git repositories served
over loopback, their requirement a wheel made here.

POST /environments builds each pack on the VM; a job using the shared pack's node type then
runs in a ComfyUI restarted with the layer (downloaded once: the second job's receipt says
nothing was downloaded); after Ana's private environment, Bo's job runs in a new ComfyUI
process in which no module of Ana's pack is loaded (the pack's own node checks that from
inside the process) and Ana's layer is gone from the VM's disk."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from comfyburst.client import ApiClient, ClientSettings
from localcloud.scenarios.harness import cloud_config, disk_root, running_cloud
from tests._env_pack_support import (
    NODE_TYPE,
    git_http_server,
    make_base_venv,
    make_wheelhouse,
    pip_args,
    serve_pack,
)
from tests._poll import poll_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

KEYS = {"ana": "env-run-key-ana", "bo": "env-run-key-bo"}
VM_NAME = "comfyburst-gpu-0"
SHOW, ISOLATED, PRIVATE = "CbEnvShow", "CbEnvIsolated", "CbEnvPrivate"

# The shared pack: the double of _env_pack_support, an output node, and a node that fails its
# job if any module of the private pack is loaded in the ComfyUI process running it.
SHARED_PACK = f"""import sys

from cbenvdep import FACTOR


class Double:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"value": ("INT", {{"default": 1}})}}}}

    def run(self, value):
        return (value * FACTOR,)


class Isolated(Double):
    def run(self, value):
        leaked = sorted(m for m in sys.modules if "priv-pack" in m)
        if leaked:
            raise RuntimeError("a private pack is loaded here: " + ", ".join(leaked))
        return (value,)


class Show:
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"value": ("INT", {{"forceInput": True}})}}}}

    def show(self, value):
        return {{"ui": {{"text": [str(value)]}}, "result": ()}}


NODE_CLASS_MAPPINGS = {{"{NODE_TYPE}": Double, "{ISOLATED}": Isolated, "{SHOW}": Show}}
"""
PRIVATE_PACK = SHARED_PACK.replace(
    f'NODE_CLASS_MAPPINGS = {{"{NODE_TYPE}": Double, "{ISOLATED}": Isolated, "{SHOW}": Show}}',
    f'NODE_CLASS_MAPPINGS = {{"{PRIVATE}": Double, "{PRIVATE}Show": Show}}',
)


class Rig:
    def __init__(self, env: dict[str, str], disk: Path, packs: dict[str, str]) -> None:
        self.env, self.disk, self.packs = env, disk, packs
        self.api = env["COMFYBURST_API_URL"]
        self.clients = {
            who: ApiClient(ClientSettings(api_url=self.api, auth="api_key", api_key=key))
            for who, key in KEYS.items()
        }

    def environment(self, who: str, pack: str) -> str:
        """Ask for the environment of one pack; wait until it is built; its id."""
        headers = {"X-API-Key": KEYS[who]}
        created = requests.post(
            f"{self.api}/environments", json={"packs": [pack]}, headers=headers, timeout=60
        )
        assert created.status_code in (200, 201), created.text
        env_id: str = created.json()["id"]

        def built() -> dict[str, Any] | None:
            got = requests.get(f"{self.api}/environments/{env_id}", headers=headers, timeout=60)
            body: dict[str, Any] = got.json()
            return body if body.get("state") in ("ready", "failed") else None

        done = poll_until(built, f"environment {env_id} built", timeout_s=300)
        assert done["state"] == "ready", done
        return env_id

    def run(self, who: str, env_id: str, node: str, show: str = SHOW) -> dict[str, Any]:
        workflow = {
            "1": {"class_type": node, "inputs": {"value": 21}},
            "2": {"class_type": show, "inputs": {"value": ["1", 0]}},
        }
        request = {"workflow": workflow, "options": {"timeout_s": 240, "environment": env_id}}
        client = self.clients[who]
        job = client.submit(request)
        return client.wait(job["job_id"], poll_s=0.3, timeout_s=280)

    def standin_boot(self) -> dict[str, Any]:
        """The running stand-in's start: its id, the environment and packs it loaded."""
        url = (self.disk / "standin_url").read_text().strip()
        stats = requests.get(f"{url}/system_stats", timeout=30).json()
        boot: dict[str, Any] = stats["system"]["standin_boot"]
        return boot

    def cached(self) -> list[str]:
        """The environment layers in the VM's layer cache."""
        cache = self.disk / "environments" / "cache"
        return sorted(p.name for p in cache.glob("env-*")) if cache.is_dir() else []


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Its own cloud: environments open to its git server's loopback host (known once it runs)
    and the VM building from the base venv and wheels made here, all read at start."""
    root = tmp_path_factory.mktemp("env-run")
    wheels = make_wheelhouse(root / "wheels")
    saved = os.environ.get("PIP_CONFIG_FILE")
    os.environ["PIP_CONFIG_FILE"] = os.devnull
    try:
        base_python = make_base_venv(root / "base", wheels)
    finally:
        if saved is None:
            os.environ.pop("PIP_CONFIG_FILE", None)
        else:
            os.environ["PIP_CONFIG_FILE"] = saved
    with git_http_server(root / "served") as hostport:
        packs = {
            "shared": serve_pack(
                root / "served", hostport, root / "work", "shared-pack", init_text=SHARED_PACK
            ),
            "private": serve_pack(
                root / "served", hostport, root / "work", "priv-pack", init_text=PRIVATE_PACK
            ),
        }
        hashes = ",".join(f"{w}={hashlib.sha256(k.encode()).hexdigest()}" for w, k in KEYS.items())
        settings_env = {
            "COMFYBURST_AUTH_MODE": "api_key",
            "COMFYBURST_API_KEY_HASHES": hashes,
            "COMFYBURST_HTTP_MODEL_HOSTS": hostport,
            "COMFYBURST_CUSTOM_NODE_SOURCES": f"{hostport}/owner",
            "COMFYBURST_TRUSTED_CUSTOM_NODE_SOURCES": f"{hostport}/owner/shared-pack",
            # The VM builds as its own (only) user, from the wheels made here.
            "COMFYBURST_WORKER_ENV_BASE_PYTHON": str(base_python),
            "COMFYBURST_WORKER_ENV_BUILD_UNISOLATED": "true",
            "COMFYBURST_WORKER_ENV_PIP_ARGS": " ".join(pip_args(wheels)),
            "PIP_CONFIG_FILE": os.devnull,
            # One boot for the test's four jobs (a later job's environment_s == 0 needs the same
            # ComfyUI): the VM stays up between them however slow the machine is.
            "COMFYBURST_DRAIN_GRACE_S": "120",
        }
        state_dir = tmp_path_factory.mktemp("env-run-cloud")
        config = cloud_config(state_dir, pool_size=1, settings_env=settings_env)
        with running_cloud(config) as cloud:
            yield Rig(dict(cloud.env), disk_root(state_dir) / VM_NAME, packs)


@pytest.fixture
def localcloud_env(rig: Rig) -> dict[str, str]:
    """This module's cloud (conftest's autouse wipe empties it before the test)."""
    return rig.env


def test_jobs_run_in_their_environment_and_a_private_one_serves_only_its_owner(rig: Rig) -> None:
    shared = rig.environment("ana", rig.packs["shared"])
    private = rig.environment("ana", rig.packs["private"])
    assert shared != private

    first = rig.run("ana", shared, NODE_TYPE)
    assert first["state"] == "succeeded", first.get("error")
    timings, phases = first["worker_timings"], first["phases"]
    assert timings["environment_downloaded"] is True and timings["environment_s"] > 0
    assert phases["environment_ready_at"] is not None
    at = {k: datetime.fromisoformat(v) for k, v in phases.items() if v is not None}
    assert at["claimed_at"] <= at["environment_ready_at"] <= at["done_at"]
    boot = rig.standin_boot()
    assert boot["environment_id"] == shared
    assert rig.cached() == [shared]
    assert _vm_document(rig.env).get("environments") == [shared]

    # Bo's job in the shared environment, on the same VM: nothing downloaded.
    second = rig.run("bo", shared, NODE_TYPE)
    assert second["state"] == "succeeded", second.get("error")
    assert second["worker_timings"]["environment_downloaded"] is False
    assert second["worker_timings"]["environment_s"] == 0  # loaded already: no restart

    # Ana's private environment, then Bo's job: a new ComfyUI process without Ana's pack.
    third = rig.run("ana", private, PRIVATE, show=f"{PRIVATE}Show")
    assert third["state"] == "succeeded", third.get("error")
    in_private = rig.standin_boot()
    assert in_private["environment_id"] == private
    assert private in rig.cached()
    fourth = rig.run("bo", shared, ISOLATED)
    assert fourth["state"] == "succeeded", fourth.get("error")
    after = rig.standin_boot()
    assert after["boot_id"] != in_private["boot_id"]
    assert after["environment_id"] == shared
    assert not any("priv-pack" in p for p in after["custom_nodes_loaded"])
    assert private not in rig.cached()


def _vm_document(env: dict[str, str]) -> dict[str, Any]:
    from localcloud.scenarios.harness import Observer

    observer = Observer(env)
    try:
        doc = observer._db().collection("vms").document(VM_NAME).get()
        return doc.to_dict() or {}
    finally:
        observer.close()
