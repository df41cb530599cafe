"""The caller_limits terraform variable, evaluated offline: variables.tf + gpu_classes.tf applied
by a real Terraform to a local state, the value rendered as functions.tf renders it, then read
through FunctionSettings exactly as the functions read COMFYBURST_CALLER_LIMITS."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from comfyburst.domain.caller_limits import Limits
from comfyburst.settings import FunctionSettings
from tests.deploy import hcl
from tests.test_deploy_gpu_classes import TERRAFORM, TF_ENV, needs_terraform

OUTPUTS = 'output "env" { value = jsonencode(var.caller_limits) }\n'
CLASSES = {
    name: {"machine_type": "g2-standard-8", "zones": ["us-central1-a"], "price_per_hour": 1}
    for name in ("t4", "h100")
}


def _apply(tmp_path: Path, tfvars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    root = tmp_path / "limits"
    root.mkdir(parents=True, exist_ok=True)
    for name in ("variables.tf", "gpu_classes.tf"):
        shutil.copy(hcl.TERRAFORM / name, root / name)
    (root / "outputs.tf").write_text(OUTPUTS, encoding="utf-8")
    (root / "test.tfvars.json").write_text(json.dumps(tfvars), encoding="utf-8")
    assert TERRAFORM is not None
    command = [TERRAFORM, "apply", "-no-color", "-input=false", "-auto-approve", "-lock=false"]
    return subprocess.run(
        [*command, "-var-file=test.tfvars.json", "-state=test.tfstate"],
        cwd=root,
        env={**os.environ, **TF_ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _rendered(tmp_path: Path, tfvars: dict[str, Any]) -> str:
    applied = _apply(tmp_path, tfvars)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert TERRAFORM is not None
    out = subprocess.run(
        [TERRAFORM, "output", "-json", "-state=test.tfstate"],
        cwd=tmp_path / "limits",
        env={**os.environ, **TF_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    value: str = json.loads(out)["env"]["value"]
    return value


def _settings(monkeypatch: pytest.MonkeyPatch, env: str, classes: str | None) -> FunctionSettings:
    for name in ("PROJECT_ID", "JOBS_BUCKET", "OUTPUTS_BUCKET", "SIGNALS_BUCKET", "RESULTS_TOPIC"):
        monkeypatch.setenv(f"COMFYBURST_{name}", "x")
    if classes is not None:
        monkeypatch.setenv("COMFYBURST_GPU_CLASSES", classes)
    monkeypatch.setenv("COMFYBURST_CALLER_LIMITS", env)
    return FunctionSettings()


def test_functions_tf_passes_the_variable_to_the_functions_as_json() -> None:
    text = (hcl.TERRAFORM / "functions.tf").read_text(encoding="utf-8")
    assert re.search(r"COMFYBURST_CALLER_LIMITS\s*=\s*jsonencode\(var\.caller_limits\)", text)
    variable = hcl.variables()["caller_limits"]
    assert variable["default"] == {}


@needs_terraform
def test_the_default_is_no_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _rendered(tmp_path, {"project_id": "p"})
    limits = _settings(monkeypatch, env, None).caller_limits
    assert limits.for_caller("key:any") == Limits()


@needs_terraform
def test_a_default_and_overrides_reach_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tfvars = {
        "project_id": "p",
        "gpu_classes": CLASSES,
        "default_gpu_class": "t4",
        "caller_limits": {
            "default": {"max_queued": 20, "gpu_classes": ["t4"]},
            "callers": {
                "key:farm": {"max_queued": 500, "max_running": 8, "max_environments": 3},
                "ops@example.com": {"gpu_classes": ["t4", "h100"]},
            },
        },
    }
    env = _rendered(tmp_path, tfvars)
    classes = json.dumps(
        [
            {"name": n, "zones": ["us-central1-a"], "templates": {"us-central1": "t"}}
            for n in CLASSES
        ]
    )
    limits = _settings(monkeypatch, env, classes).caller_limits
    assert limits.for_caller("key:someone") == Limits(max_queued=20, gpu_classes=["t4"])
    # terraform passes an unset optional attribute as null: the default's value holds.
    assert limits.for_caller("key:farm") == Limits(
        max_queued=500, max_running=8, gpu_classes=["t4"], max_environments=3
    )
    assert limits.for_caller("ops@example.com") == Limits(max_queued=20, gpu_classes=["t4", "h100"])


@needs_terraform
@pytest.mark.parametrize(
    ("caller_limits", "message"),
    [
        ({"default": {"max_queued": -1}}, "max_queued must be a whole number >= 0"),
        ({"callers": {"key:a": {"max_queued": 2.5}}}, "max_queued must be a whole number >= 0"),
        ({"callers": {"": {"max_queued": 1}}}, "each principal in callers"),
        ({"default": {"max_running": 0}}, "max_running must be a whole number >= 1"),
        ({"callers": {"key:a": {"max_environments": 1.5}}}, "max_environments must be a whole"),
        ({"default": {"gpu_classes": ["a100"]}}, "may name only declared GPU classes"),
    ],
    ids=[
        "negative",
        "fraction",
        "empty-principal",
        "running-zero",
        "env-fraction",
        "unknown-class",
    ],
)
def test_a_wrong_value_fails_the_plan_with_its_reason(
    tmp_path: Path, caller_limits: dict[str, Any], message: str
) -> None:
    result = _apply(
        tmp_path,
        {
            "project_id": "p",
            "gpu_classes": CLASSES,
            "default_gpu_class": "t4",
            "caller_limits": caller_limits,
        },
    )
    assert result.returncode != 0
    said = " ".join((result.stdout + result.stderr).split())
    assert "Invalid value for variable" in said and message in said, said
