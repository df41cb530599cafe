"""A build job runs pack code as ComfyUI's user, so the agent first brings ComfyUI back to the
base for the build's caller: another caller's private environment is neither running nor on
disk while the build runs (the same rule as before a job, comfyburst_worker/comfy_env.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfyburst.schema import DoneManifest, DoneStatus
from tests._worker_support import local_config, local_settings, make_agent
from tests.fakes import InMemoryBlobStore, InMemoryJobStore
from tests.test_env_switch import AGENT_VM, E, node_types, rig  # noqa: F401  (fixture)
from tests.test_environments_build import _build_job, put_build_job


def test_a_build_runs_with_comfyui_back_on_the_base_and_no_private_layer(
    rig: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    env, restarts, layers, _ = rig
    assert env.prepare(E, True, "key:ana").restarted  # Ana's private environment runs
    assert layers.present() == [E] and node_types(env) == {"CbNodeE"}
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    build = _build_job([f"https://github.com/o/r@{'a' * 40}"]).model_copy(
        update={"caller": "key:bo"}
    )
    job = put_build_job(store, config, build, AGENT_VM)
    settings = local_settings(restarts.url, tmp_path / "m", env_layers_dir=tmp_path / "layers")
    agent = make_agent(settings, config, store, blobs, AGENT_VM)
    agent.s.env = env
    agent.run(job.job_id)
    # Ana's layer was deleted before ComfyUI restarted on the base, ahead of Bo's build.
    assert restarts.on_disk_at_restart[-1] == []
    assert layers.present() == [] and node_types(env) == set()
    raw = blobs.read("signals", f"jobs/{job.job_id}/done.json")
    assert raw is not None
    done = DoneManifest.model_validate_json(raw)
    # The build itself is refused here (no base venv): what matters is what ran before it.
    assert done.status is DoneStatus.FAILED and done.error is not None
    assert "cannot build environments" in done.error.message
