"""The worker's isolation between environments survives the agent dying mid-switch
(comfyburst_worker/comfy_env.py)."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any

from comfyburst_worker.comfy_env import ComfyEnv
from tests import test_env_switch
from tests.test_env_switch import E, F, node_types

rig = test_env_switch.rig  # the stand-in restarted by the "restart command" (a fixture)


class AgentKilled(BaseException):
    """The agent's process dies (OOM kill, SIGKILL) while `systemctl restart` runs."""


def test_an_agent_killed_while_leaving_a_private_environment_restarts_comfyui(rig: Any) -> None:
    env, restarts, _, _ = rig
    assert env.prepare(E, True, "key:ana").restarted
    assert node_types(env) == {"CbNodeE"}  # Ana's private pack code runs in ComfyUI

    def dies(argv: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        raise AgentKilled

    # Bo's base job: the layer file already names the base when the agent dies, before the
    # old process stopped; ComfyUI still runs Ana's private environment.
    env.run = dies
    with contextlib.suppress(AgentKilled):
        env.prepare(None, False, "key:bo")
    assert node_types(env) == {"CbNodeE"}
    # systemd starts the agent again: it must not trust the file to say what ComfyUI loaded.
    again = ComfyEnv(env.layers, env.comfy, env.layer_file, ["restart-comfyui"], 30.0, restarts)
    again.settle_s = 0.5
    again.start()
    assert again.prepare(None, False, "key:bo").restarted
    assert node_types(again) == set()


def test_no_private_layer_lands_on_disk_while_another_callers_pack_code_runs(rig: Any) -> None:
    env, _, layers, _ = rig
    assert env.prepare(E, True, "key:cy").restarted  # Cy's private pack code runs in ComfyUI
    seen: list[tuple[str, set[str]]] = []
    download = layers.blobs.download_file

    def watched(bucket: str, name: str, path: str) -> bool:
        seen.append((name, node_types(env)))  # what ComfyUI runs while the layer arrives
        return bool(download(bucket, name, path))

    layers.blobs.download_file = watched
    assert env.prepare(F, True, "key:ana").restarted  # Ana's private environment
    assert [n for n, _ in seen] == [f"environments/{F}/layer.tar.gz"]
    assert all("CbNodeE" not in types for _, types in seen)
    assert node_types(env) == {"CbNodeF"} and layers.present() == [F]


def test_private_layers_a_reboot_left_go_when_the_agent_starts_on_the_base(rig: Any) -> None:
    env, _, layers, _ = rig
    layers.ensure(E, private=True)  # on the disk from before the VM stopped; ComfyUI: the base
    layers.ensure(F, private=False)
    env.start()
    # A build job runs pack code beside the base without a restart: nothing private is there.
    assert layers.present() == [F]
