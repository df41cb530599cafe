"""One local cloud for every e2e test module: VMs run the worker + ComfyUI stand-in (vm_guest)
with stand-in faults armed by node class, so a test picks its fault by its workflow:
ImageBlur is slow (with progress), ImageScale raises at run time."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from localcloud.cloud import LocalCloud

REPO_ROOT = Path(__file__).resolve().parent.parent
INVERT = REPO_ROOT / "examples" / "workflows" / "invert.json"
SLOW_NODE_S = 6.0
ERROR_MESSAGE = "e2e injected failure"
STANDIN_FAULTS = {
    "slow_node_class": "ImageBlur",
    "slow_node_s": SLOW_NODE_S,
    "sampler_steps": 12,
    "execution_error": {"class_type": "ImageScale", "message": ERROR_MESSAGE},
}
_cloud: LocalCloud | None = None


def e2e_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Start the shared e2e cloud once per session (stopped when the session ends)."""
    global _cloud
    if _cloud is None:
        from tests.conftest import refuse_localcloud

        refuse_localcloud()
        from localcloud.scenarios.harness import arm_standin_faults, cloud_config, vm_names, warm_up

        state_dir = request.config._tmp_path_factory.mktemp("e2e-cloud")  # type: ignore[attr-defined]
        config = cloud_config(state_dir, pool_size=2)
        arm_standin_faults(config.state_dir, vm_names(config), STANDIN_FAULTS)
        cloud = LocalCloud(config)
        request.config.add_cleanup(cloud.stop)
        cloud.start()
        warm_up(cloud.env)
        _cloud = cloud
    return dict(_cloud.env)


def invert_workflow() -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads(INVERT.read_text())
    return workflow


def with_node(workflow: dict[str, Any], class_type: str, **inputs: Any) -> dict[str, Any]:
    """The workflow with `class_type` inserted between the invert and the save."""
    changed = copy.deepcopy(workflow)
    changed["5"] = {"class_type": class_type, "inputs": {"image": ["2", 0], **inputs}}
    changed["3"]["inputs"]["images"] = ["5", 0]
    return changed
