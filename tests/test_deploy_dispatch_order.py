"""The dispatch_order terraform variable: functions.tf hands it to the functions as
COMFYBURST_DISPATCH_ORDER, and a real Terraform's plan (variables.tf applied offline to a local
state, tests/test_deploy_gpu_classes.py's run) takes "fair" and "fifo" and refuses anything
else. The settings' reading of the value: tests/test_fair_share.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy import hcl
from tests.test_deploy_gpu_classes import _run, needs_terraform


def test_functions_tf_passes_the_variable_to_the_functions() -> None:
    text = (hcl.TERRAFORM / "functions.tf").read_text(encoding="utf-8")
    assert re.search(r"COMFYBURST_DISPATCH_ORDER\s*=\s*var\.dispatch_order\b", text)
    assert hcl.variables()["dispatch_order"]["default"] == "fair"


@needs_terraform
@pytest.mark.parametrize(("value", "accepted"), [("fair", True), ("fifo", True), ("lifo", False)])
def test_the_plan_takes_fair_and_fifo_only(tmp_path: Path, value: str, accepted: bool) -> None:
    applied = _run(tmp_path, {"project_id": "p", "dispatch_order": value})
    output = applied.stdout + applied.stderr
    assert (applied.returncode == 0) is accepted, output
    assert ('dispatch_order must be "fair" or "fifo"' in output) is not accepted, output
