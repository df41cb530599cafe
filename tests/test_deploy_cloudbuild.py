"""cloudbuild.yaml runs only the repo's own step scripts in images pinned by tag; each script's
dry run works here, uses name_prefix for every name, and keeps the Hugging Face token optional."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy import hcl

yaml = pytest.importorskip("yaml", reason="PyYAML comes with schemathesis (requirements-dev.txt)")

BUILD = yaml.safe_load((hcl.REPO / "cloudbuild.yaml").read_text(encoding="utf-8"))
STEPS = BUILD["steps"]
SUBSTITUTION = re.compile(r"\$\{(_[A-Z0-9_]+)\}|\$(PROJECT_ID)\b")
# A version tag: digits and dots, optionally with a variant suffix (573.0.0-stable).
PINNED_TAG = re.compile(r"^\d+(\.\d+)+(-[a-z0-9]+)?$")
SH = shutil.which("sh")
PROJECT = "example-project-123"


def _expand(value: str, overrides: dict[str, str]) -> str:
    values = {**BUILD["substitutions"], **overrides, "PROJECT_ID": PROJECT}

    def one(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return SUBSTITUTION.sub(one, value)


def _dry_run(step: dict, workspace: Path, tf_dir: Path, **overrides: str):
    env = {"PATH": os.environ["PATH"], "HOME": str(workspace), "LC_ALL": "C"}
    for item in step.get("env", []):
        name, _, value = _expand(item, overrides).partition("=")
        env[name] = value
    env.update(WORKSPACE=str(workspace), TF_DIR=str(tf_dir))
    script, *args = step["args"]
    return subprocess.run(
        [step["entrypoint"], script, "--dry-run", *args],
        cwd=hcl.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _pipeline(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Every step's dry run in order; the output of each, by step id."""
    workspace = tmp_path / "workspace"
    tf_dir = tmp_path / "terraform"
    shutil.copytree(hcl.TERRAFORM, tf_dir, ignore=shutil.ignore_patterns(".terraform*"))
    outputs = {}
    for step in STEPS:
        result = _dry_run(step, workspace, tf_dir, **overrides)
        assert result.returncode == 0, (step["id"], result.stdout, result.stderr)
        outputs[step["id"]] = result.stdout
    return outputs


def test_steps_are_the_pipeline_in_order():
    ids = [s["id"] for s in STEPS]
    assert ids == [
        "packer-binary",
        "terraform-binary",
        "test",
        "image-decision",
        "terraform-init",
        "terraform-bootstrap",
        "bake",
        "terraform-plan",
        "terraform-apply",
    ]
    assert int(BUILD["timeout"].rstrip("s")) >= 3600


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s["id"])
def test_every_image_is_pinned_to_a_version_tag(step):
    image = step["name"]
    assert "@" not in image or re.search(r"@sha256:[0-9a-f]{64}$", image), image
    repository, _, tag = image.rpartition(":")
    assert repository and "/" not in tag, f"{image}: no tag"
    assert tag != "latest" and PINNED_TAG.match(tag), f"{image}: {tag} is not a version tag"


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s["id"])
def test_every_step_runs_one_repo_script(step):
    assert step["entrypoint"] == "sh"
    script = step["args"][0]
    assert step["args"] == [script], "arguments go through env, scripts stay the whole step"
    path = hcl.REPO / script
    assert path.parent == hcl.REPO / "deploy" and path.is_file(), script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert "--dry-run" in (hcl.REPO / "deploy" / "lib.sh").read_text(encoding="utf-8")


def test_every_substitution_is_declared_and_the_token_is_not_a_build_secret():
    text = (hcl.REPO / "cloudbuild.yaml").read_text(encoding="utf-8")
    used = {m.group(1) for m in SUBSTITUTION.finditer(text) if m.group(1)}
    assert used <= set(BUILD["substitutions"]), used - set(BUILD["substitutions"])
    # availableSecrets fails the whole build when a secret has no version: the token is optional.
    assert "availableSecrets" not in BUILD
    assert not any("secretEnv" in s for s in STEPS)


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_the_whole_pipeline_dry_runs_with_the_default_values(tmp_path):
    out = _pipeline(tmp_path, _TF_STATE_BUCKET="example-tfstate")
    assert "+ packer init gpu_image\n+ make test\n" in out["test"]
    assert "+ gcloud compute images describe-from-family comfyburst-gpu" in out["image-decision"]
    assert (
        "terraform init -input=false -backend-config=bucket=example-tfstate"
        in (out["terraform-init"])
    )
    # No image yet (dry run): the bootstrap creates what the bake needs, the bake runs.
    assert "-target=google_compute_firewall.iap_ssh" in out["terraform-bootstrap"]
    assert "+ packer build" in out["bake"]
    assert "terraform plan -input=false -out=" in out["terraform-plan"]
    assert "+ terraform apply -input=false" in out["terraform-apply"]
    assert (tmp_path / "workspace" / "source_hash").read_text().strip()
    tfvars = (tmp_path / "terraform" / "pipeline.auto.tfvars").read_text()
    assert 'gpu_zones           = ["us-central1-a","us-central1-b"]' in tfvars


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_name_prefix_reaches_every_name_and_tag(tmp_path):
    out = _pipeline(tmp_path, _NAME_PREFIX="acme-burst", _TF_STATE_BUCKET="tfstate")
    everything = "\n".join(out.values())
    tfvars = (tmp_path / "terraform" / "pipeline.auto.tfvars").read_text()
    assert "comfyburst" not in everything + tfvars
    bake = out["bake"]
    for expected in (
        "name_prefix=acme-burst",  # the build VM's network tag acme-burst-gpu
        "image_family=acme-burst-gpu",
        "subnetworks/acme-burst-pool",
        "service_account_email=acme-burst-imager@example-project-123.iam.gserviceaccount.com",
        "jobs_bucket=example-project-123-acme-burst-jobs",
        "--secret=acme-burst-huggingface-token",
    ):
        assert expected in bake, expected
    assert 'name_prefix         = "acme-burst"' in tfvars
    assert 'gpu_image_family    = "acme-burst-gpu"' in tfvars
    assert "prefix=acme-burst" in out["terraform-init"]
    # The IAP rule and the image build agree on the tag (terraform side of the same rule).
    rule = hcl.resources("google_compute_firewall")["iap_ssh"]
    assert rule["target_tags"] == ["${var.name_prefix}-gpu"]
    source = hcl.load(hcl.GPU_IMAGE / "image.pkr.hcl")["source"][0]["googlecompute"]["gpu"]
    assert source["tags"] == ["${var.name_prefix}-gpu"]


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_the_token_never_goes_on_a_command_line(tmp_path):
    out = _pipeline(tmp_path, _TF_STATE_BUCKET="tfstate")
    bake = out["bake"]
    assert "huggingface_token" not in bake
    script = (hcl.REPO / "deploy" / "bake.sh").read_text(encoding="utf-8")
    assert "PKR_VAR_huggingface_token=" in script and "-var huggingface_token" not in script
    template = (hcl.GPU_IMAGE / "image.pkr.hcl").read_text(encoding="utf-8")
    assert "use_env_var_file = true" in template and "{{ .Vars }}" not in template


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
@pytest.mark.parametrize(
    ("step_id", "overrides", "message"),
    [
        ("terraform-init", {"_TF_STATE_BUCKET": ""}, "TF_STATE_BUCKET is required"),
        ("image-decision", {"_BUILD_IMAGE": "maybe"}, "BUILD_IMAGE must be auto, true or false"),
        ("terraform-apply", {"_APPLY": "yes"}, "APPLY must be true or false"),
        ("bake", {"_NAME_PREFIX": "Bad_Prefix"}, "NAME_PREFIX must be"),
        ("bake", {"_USE_OS_LOGIN": "maybe"}, "USE_OS_LOGIN must be true or false"),
    ],
)
def test_bad_inputs_stop_a_step_with_a_clear_message(tmp_path, step_id, overrides, message):
    step = next(s for s in STEPS if s["id"] == step_id)
    result = _dry_run(step, tmp_path / "ws", hcl.TERRAFORM, **overrides)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_an_image_that_is_up_to_date_is_not_baked(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "build_image").write_text("false\n")
    (workspace / "image_exists").write_text("true\n")
    for step_id, expected in (
        ("bake", "image up to date"),
        ("terraform-bootstrap", "no bootstrap"),
    ):
        step = next(s for s in STEPS if s["id"] == step_id)
        result = _dry_run(step, workspace, hcl.TERRAFORM)
        assert result.returncode == 0 and expected in result.stdout, result.stdout
        assert "+ " not in result.stdout


def test_make_runs_the_same_step_scripts():
    makefile = (hcl.REPO / "Makefile").read_text(encoding="utf-8")
    for step in STEPS:
        assert step["args"][0] in makefile, f"no make target runs {step['args'][0]}"


def test_every_bootstrap_target_is_a_resource_of_the_module():
    script = (hcl.REPO / "deploy" / "terraform-bootstrap.sh").read_text(encoding="utf-8")
    targets = re.findall(r"-target=([a-z0-9_]+)\.([a-z0-9_]+)", script)
    assert len(targets) >= 5
    for rtype, name in targets:
        assert name in hcl.resources(rtype), f"-target={rtype}.{name}: no such resource"
    # The image build needs its account, network path and bucket grant; the pool waits.
    named = {t for t, _ in targets}
    assert {"google_service_account", "google_compute_router_nat"} <= named
    assert not any(t.startswith("google_compute_region_instance_template") for t in named)
    assert not any(t == "google_cloudfunctions2_function" for t in named)
