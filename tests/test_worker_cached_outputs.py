"""The same workflow twice on one VM: ComfyUI would replay the first run's cached output
node (its files already emptied), so the worker has output nodes run again, and only them."""

from __future__ import annotations

import hashlib

from comfyburst.schema import DoneManifest, DoneStatus, VmRef
from comfyburst_worker import prompt_scope
from tests._worker_support import (
    invert_workflow,
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")


def _done(blobs: InMemoryBlobStore, job_id: str) -> DoneManifest:
    raw = blobs.read("signals", f"jobs/{job_id}/done.json")
    assert raw is not None, "no done.json"
    return DoneManifest.model_validate_json(raw)


def test_the_same_workflow_twice_on_one_vm_both_succeed_with_their_own_output(tmp_path, standin):
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    first = put_job(store, blobs, config, make_request(invert_workflow()), VM)
    second = put_job(store, blobs, config, make_request(invert_workflow()))
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(first.job_id)
    one, two = _done(blobs, first.job_id), _done(blobs, second.job_id)
    assert one.next_job_id == second.job_id  # the draining worker ran both, one after another
    assert one.status is DoneStatus.SUCCEEDED, one.error
    assert two.status is DoneStatus.SUCCEEDED, two.error
    (out,) = two.outputs
    stored = blobs.read("outputs", f"jobs/{second.job_id}/outputs/{out.name}")
    assert stored is not None and hashlib.sha256(stored).hexdigest() == out.sha256


def test_only_output_nodes_get_the_run_input() -> None:
    workflow = invert_workflow()
    fresh = prompt_scope.rerun_outputs(workflow, ["3"], "job-1")
    assert fresh["3"]["inputs"][prompt_scope.RUN_INPUT] == "job-1"
    assert fresh["1"] == workflow["1"] and fresh["2"] == workflow["2"]
    assert prompt_scope.RUN_INPUT not in workflow["3"]["inputs"]  # the input is not changed


def test_without_accepted_outputs_the_sinks_get_it() -> None:
    workflow = invert_workflow()
    fresh = prompt_scope.rerun_outputs(workflow, [], "job-2")
    assert [n for n, node in fresh.items() if prompt_scope.RUN_INPUT in node["inputs"]] == ["3"]
