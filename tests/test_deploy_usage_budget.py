"""caller_limits' monthly_budget_usd, evaluated offline by a real Terraform as the functions
read it (the helpers of tests/test_deploy_caller_limits.py), and the Firestore index usage's
per-caller query needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from comfyburst.domain.caller_limits import Limits
from tests.deploy import hcl
from tests.test_deploy_caller_limits import _apply, _rendered, _settings
from tests.test_deploy_gpu_classes import needs_terraform


@needs_terraform
def test_a_budget_and_its_override_reach_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tfvars = {
        "project_id": "p",
        "job_ttl_days": 40,
        "caller_limits": {
            "default": {"monthly_budget_usd": 50},
            "callers": {"key:farm": {"monthly_budget_usd": 2500.5}, "key:other": {}},
        },
    }
    limits = _settings(monkeypatch, _rendered(tmp_path, tfvars), None).caller_limits
    assert limits.for_caller("key:someone") == Limits(monthly_budget_usd=50)
    assert limits.for_caller("key:farm").monthly_budget_usd == 2500.5
    assert limits.for_caller("key:other").monthly_budget_usd == 50  # null: the default's


@needs_terraform
@pytest.mark.parametrize(
    ("tfvars", "message"),
    [
        (
            {"job_ttl_days": 40, "caller_limits": {"default": {"monthly_budget_usd": -1}}},
            "monthly_budget_usd must be a number of USD >= 0",
        ),
        (
            {"caller_limits": {"callers": {"key:a": {"monthly_budget_usd": 10}}}},
            "monthly_budget_usd needs job_ttl_days >= 32",
        ),
    ],
    ids=["negative", "ttl-shorter-than-a-month"],
)
def test_a_wrong_budget_fails_the_plan_with_its_reason(
    tmp_path: Path, tfvars: dict[str, Any], message: str
) -> None:
    result = _apply(tmp_path, {"project_id": "p", **tfvars})
    assert result.returncode != 0
    said = " ".join((result.stdout + result.stderr).split())
    assert "Invalid value for variable" in said and message in said, said


def test_firestore_tf_declares_the_index_of_a_caller_s_usage_query() -> None:
    # adapters/firestore_usage.py: caller ==, a finished_at range ordered by finished_at.
    text = (hcl.TERRAFORM / "firestore.tf").read_text(encoding="utf-8")
    block = re.search(r'resource "google_firestore_index" "jobs_usage" \{(.*?)\n\}', text, re.S)
    assert block is not None
    fields = re.findall(r'field_path\s*=\s*"([^"]+)"\s*\n\s*order\s*=\s*"([A-Z]+)"', block[1])
    assert fields == [("caller", "ASCENDING"), ("finished_at", "ASCENDING")]
