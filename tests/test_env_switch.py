"""Switching ComfyUI's environment before a job (comfyburst_worker/comfy_env.py): the isolation
rule as a table, then the switch against the ComfyUI stand-in, restarted on its port by the
"restart command" from the active layer file the worker wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from comfyburst.schema import DoneManifest, DoneStatus, Job, VmRef
from comfyburst_worker.claims import LeaseKeeper
from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.comfy_env import (
    UNKNOWN_OWNER,
    ComfyEnv,
    Loaded,
    NodeTypesAbsent,
    RestartFailed,
    SwitchUnsupported,
    layers_to_delete,
    must_restart,
    ready_for_job,
)
from comfyburst_worker.env_layers import LayerCache
from localcloud.comfyui_standin import StandinServer
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import FixedClock, InMemoryBlobStore, InMemoryJobStore
from tests.test_env_layers import BUCKET, env_id, layer_archive, store

E, F, G = env_id(0xE), env_id(0xF), env_id(0x6)
AGENT_VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")


@pytest.mark.parametrize(
    ("loaded", "env", "caller", "restart"),
    [
        (Loaded(), None, "x", False),  # the base, as booted
        (Loaded(), E, "x", True),  # into an environment
        (Loaded(E), E, "x", False),  # a shared environment serves everyone
        (Loaded(E), E, "y", False),
        (Loaded(E), None, "x", True),  # back to the base
        (Loaded(E), F, "x", True),  # another environment
        (Loaded(E, "x"), E, "x", False),  # X's private environment, X again
        (Loaded(E, "x"), E, "y", True),  # never Y in X's process (Y cannot name E anyway)
        (Loaded(E, "x"), None, "y", True),  # Y's base job after X's private environment
        (Loaded(E, "x"), F, "y", True),
        (Loaded(E, UNKNOWN_OWNER), E, "x", True),  # loaded before this agent: unknown history
        (Loaded(UNKNOWN_OWNER, UNKNOWN_OWNER), None, "x", True),  # a switch that broke
    ],
)
def test_the_isolation_rule(loaded: Loaded, env: str | None, caller: str, restart: bool) -> None:
    assert must_restart(loaded, env, caller) is restart


@pytest.mark.parametrize(
    ("loaded", "private_on_disk", "next_env", "deleted"),
    [
        (Loaded(E), [], None, []),  # a shared layer stays cached
        (Loaded(E, "x"), [E], None, [E]),  # leaving X's private layer deletes it
        (Loaded(E, "x"), [E], E, []),  # X again: it stays
        (Loaded(), [E, F], F, [E]),  # a reboot's leftovers: all private layers but the next
        (Loaded(E, UNKNOWN_OWNER), [], F, [E]),  # unknown owner: deleted as a private one
        (Loaded(UNKNOWN_OWNER, UNKNOWN_OWNER), [], None, []),
    ],
)
def test_which_layers_are_deleted_before_a_restart(
    loaded: Loaded, private_on_disk: list[str], next_env: str | None, deleted: list[str]
) -> None:
    assert layers_to_delete(loaded, private_on_disk, next_env) == deleted


def pack(node_type: str) -> str:
    """A pack whose one node needs only plain values (the stand-in runs it)."""
    return (
        "class Node:\n"
        "    RETURN_TYPES = ('INT',)\n"
        "    FUNCTION = 'run'\n"
        "    CATEGORY = 'test'\n\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(cls):\n"
        "        return {'required': {'value': ('INT', {'default': 1})}}\n\n"
        "    def run(self, value):\n"
        "        return (value + 1,)\n\n\n"
        f"NODE_CLASS_MAPPINGS = {{'{node_type}': Node}}\n"
    )


class Restarts:
    """The restart command: stops the stand-in and starts it again on its port, loading the
    custom_nodes folder the active layer file names (as the local guest does)."""

    def __init__(self, tmp_path: Path, layer_file: Path, cache_dir: Path) -> None:
        self.dirs = [tmp_path / d for d in ("in", "out", "tmp")]
        self.layer_file, self.cache_dir = layer_file, cache_dir
        self.server = StandinServer(*self.dirs)
        self.url = self.server.start()
        self.calls: list[list[str]] = []
        self.on_disk_at_restart: list[list[str]] = []
        self.fail = False

    def __call__(self, argv: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        self.on_disk_at_restart.append(sorted(p.name for p in self.cache_dir.glob("env-*")))
        if self.fail:
            return subprocess.CompletedProcess(argv, 3, "", "unit failed")
        self.server.stop()
        body = json.loads(self.layer_file.read_text()) if self.layer_file.exists() else {}
        extra = (body["custom_nodes"],) if body.get("custom_nodes") else ()
        self.server = StandinServer(*self.dirs, port=self.server.port, custom_nodes_dirs=extra)
        self.server.start()
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    blobs = InMemoryBlobStore()
    for eid, node in ((E, "CbNodeE"), (F, "CbNodeF")):
        store(blobs, eid, layer_archive(init_text=pack(node)), types=(node,))
    # G's catalogue promises a node type its pack does not have.
    store(blobs, G, layer_archive(init_text=pack("CbNodeG")), types=("CbNodeG", "CbGone"))
    layers = LayerCache(tmp_path / "cache", blobs, BUCKET, 10**9)
    layer_file = tmp_path / "run" / "comfyui-layer.json"
    restarts = Restarts(tmp_path, layer_file, tmp_path / "cache")
    comfy = ComfyClient(restarts.url)
    env = ComfyEnv(layers, comfy, layer_file, ["restart-comfyui"], 30.0, restarts, settle_s=0.5)
    env.start()
    yield env, restarts, layers, blobs
    restarts.server.stop()


def node_types(env: ComfyEnv) -> set[str]:
    info = env.comfy.session.get(f"{env.comfy.base_url}/object_info", timeout=10).json()
    return {t for t in info if t.startswith("CbNode")}


def test_into_a_shared_environment_once_and_back_to_the_base(rig: Any) -> None:
    env, restarts, layers, _ = rig
    ready = env.prepare(E, False, "key:ana")
    assert ready.restarted and ready.downloaded and ready.seconds > 0
    assert node_types(env) == {"CbNodeE"}
    body = json.loads(env.layer_file.read_text())
    assert body["environment_id"] == E
    assert body["custom_nodes"] == str(layers.get(E).custom_nodes)
    assert body["site_packages"].endswith("venv/lib/python3.11/site-packages")
    # Same environment, another caller: a shared layer, no restart, nothing downloaded.
    assert env.prepare(E, False, "key:bo") == type(ready)()
    assert len(restarts.calls) == 1
    # A job without an environment: the base again; the shared layer stays cached.
    back = env.prepare(None, False, "key:bo")
    assert back.restarted and not back.downloaded
    assert (
        node_types(env) == set() and json.loads(env.layer_file.read_text())["custom_nodes"] is None
    )
    assert layers.present() == [E]
    assert env.prepare(None, False, "key:ana").restarted is False


def test_another_callers_job_never_runs_in_a_private_environments_process(rig: Any) -> None:
    env, restarts, layers, _ = rig
    assert env.prepare(E, True, "key:ana").restarted
    assert env.prepare(E, True, "key:ana").restarted is False  # its owner again: same process
    # Bo's job in F: a fresh ComfyUI, and Ana's layer was gone before it started.
    into_f = env.prepare(F, False, "key:bo")
    assert into_f.restarted
    assert restarts.on_disk_at_restart[-1] == [F]
    assert node_types(env) == {"CbNodeF"} and layers.present() == [F]
    # Ana's again: downloaded afresh.
    assert env.prepare(E, True, "key:ana").downloaded
    assert env.prepare(None, False, "key:bo").restarted
    assert restarts.on_disk_at_restart[-1] == [F]
    assert node_types(env) == set()


def test_a_layer_running_before_the_agent_started_is_of_unknown_owner(rig: Any) -> None:
    env, restarts, _, _ = rig
    env.prepare(E, False, "key:ana")
    env.start()  # the agent restarted; ComfyUI still runs E
    assert env.loaded.owner == UNKNOWN_OWNER
    assert env.prepare(E, False, "key:ana").restarted  # even the same environment
    assert env.prepare(F, False, "key:bo").restarted
    assert len(restarts.calls) == 3


def test_node_types_absent_after_the_restart_fail_the_switch(rig: Any) -> None:
    env, restarts, _, _ = rig
    with pytest.raises(NodeTypesAbsent, match="CbGone") as absent:
        env.prepare(G, False, "key:ana")
    assert absent.value.job_error().type == "environment_not_loaded"
    # What runs now is of unknown history: the next job restarts whatever it asks for.
    assert env.prepare(None, False, "key:ana").restarted
    restarts.fail = True
    with pytest.raises(RestartFailed, match="exit 3"):
        env.prepare(E, False, "key:ana")
    restarts.fail = False
    assert env.prepare(E, False, "key:ana").restarted


def test_a_vm_without_a_restart_command_runs_no_environment(rig: Any, tmp_path: Path) -> None:
    _, _, layers, _ = rig
    env = ComfyEnv(layers, ComfyClient("http://127.0.0.1:9"), tmp_path / "f.json", [], 5.0)
    env.start()
    assert env.prepare(None, False, "key:ana").restarted is False
    with pytest.raises(SwitchUnsupported) as unsupported:
        env.prepare(E, False, "key:ana")
    assert unsupported.value.job_error().type == "environment_unsupported"
    assert not (tmp_path / "f.json").exists() and layers.present() == []


def test_the_layers_on_disk_go_on_the_vms_document(rig: Any) -> None:
    env, _, _, _ = rig
    store_ = InMemoryJobStore()
    leases = LeaseKeeper(store_, VmRef(name="vm-1", zone="z"), FixedClock(), 60)
    job = Job.model_validate(
        {
            "job_id": "j1",
            "request": {
                "node_count": 1,
                "class_types": ["CbNodeE"],
                "models": [],
                "input_names": [],
                "workflow_bytes": 10,
            },
            "options": {"environment": E},
            "created_at": "2026-01-01T00:00:00Z",
            "deadline_at": "2026-01-01T01:00:00Z",
            "state_changed_at": "2026-01-01T00:00:00Z",
            "caller": "key:ana",
        }
    )
    ready_for_job(env, job, leases)
    record, _ = store_.get_vm("vm-1")
    assert record is not None and record.environments == [E]
    with pytest.raises(SwitchUnsupported):
        ready_for_job(None, job, leases)


def test_an_agent_without_a_restart_command_fails_a_job_naming_an_environment(
    tmp_path: Path, standin: str
) -> None:
    store_, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    request = make_request(invert_workflow())
    request.options.environment = E
    job = put_job(store_, blobs, config, request, AGENT_VM)
    settings = local_settings(
        standin,
        tmp_path / "m",
        env_layers_dir=tmp_path / "layers",
        comfyui_layer_file=tmp_path / "layer.json",
    )
    make_agent(settings, config, store_, blobs, AGENT_VM).run(job.job_id)
    raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
    assert raw is not None
    done = DoneManifest.model_validate_json(raw)
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert done.error.type == "environment_unsupported"
    assert "no restart command" in done.error.message
    assert not (tmp_path / "layer.json").exists()


def test_a_base_job_after_an_environment_job_shows_the_restart_on_its_receipt(
    rig: Any, tmp_path: Path
) -> None:
    env, restarts, _, blobs = rig
    store_, config = InMemoryJobStore(), local_config()
    settings = local_settings(
        restarts.url,
        tmp_path / "m",
        env_layers_dir=tmp_path / "cache",
        comfyui_layer_file=env.layer_file,
    )
    agent = make_agent(settings, config, store_, blobs, AGENT_VM)
    agent.s.env = env  # the rig's switcher: its restart command restarts the stand-in

    def run(environment: str | None) -> DoneManifest:
        request = make_request(invert_workflow())
        request.options.environment = environment
        job = put_job(store_, blobs, config, request, AGENT_VM)
        agent.run(job.job_id)
        raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
        assert raw is not None
        done = DoneManifest.model_validate_json(raw)
        assert done.status is DoneStatus.SUCCEEDED, done.error
        return done

    into_e = run(E)
    assert into_e.timings.environment_downloaded is True
    # No environment, but ComfyUI restarted back to the base: those seconds are on its receipt.
    back = run(None)
    assert len(restarts.calls) == 2
    assert back.timings.environment_s is not None and back.timings.environment_s > 0
    assert back.timings.environment_downloaded is False
    assert back.phases is not None and back.phases.environment_ready_at is not None
    assert back.phases.claimed_at is not None
    assert back.phases.claimed_at <= back.phases.environment_ready_at
    # The base again: no restart, nothing to show (as before environments).
    again = run(None)
    assert len(restarts.calls) == 2
    assert again.timings.environment_s is None and again.timings.environment_downloaded is None
    assert again.phases is not None and again.phases.environment_ready_at is None
