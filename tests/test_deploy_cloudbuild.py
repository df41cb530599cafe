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
    assert "-target=google_compute_firewall.iap_ssh_imager" in out["terraform-bootstrap"]
    assert "+ packer build" in out["bake"]
    assert "output -raw image_builder" in out["bake"]
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
        "service_account_email=acme-burst-imager@example-project-123.iam.gserviceaccount.com",
        "jobs_bucket=example-project-123-acme-burst-jobs",
        "--secret=acme-burst-huggingface-token",
    ):
        assert expected in bake, expected
    assert 'name_prefix         = "acme-burst"' in tfvars
    assert 'gpu_image_family    = "acme-burst-gpu"' in tfvars
    assert "prefix=acme-burst" in out["terraform-init"]
    # The image build's IAP rule and the build VM agree on the tag, which no pool VM carries.
    rule = hcl.resources("google_compute_firewall")["iap_ssh_imager"]
    assert rule["target_tags"] == ["${var.name_prefix}-imager"]
    assert "count" not in rule  # the bake reaches its VM whatever allow_iap_ssh says
    source = hcl.load(hcl.GPU_IMAGE / "image.pkr.hcl")["source"][0]["googlecompute"]["gpu"]
    assert source["tags"] == ["${var.name_prefix}-imager"]
    template = hcl.resources("google_compute_region_instance_template")["gpu"]
    assert template["tags"] == ["${var.name_prefix}-gpu"]
    pool_rule = hcl.resources("google_compute_firewall")["iap_ssh"]
    assert pool_rule["target_tags"] == ["${var.name_prefix}-gpu"]
    assert pool_rule["count"] == "${var.allow_iap_ssh ? 1 : 0}"


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
    targets = re.findall(r'-target="\$\{p\}([a-z0-9_]+)\.([a-z0-9_]+)"', script)
    assert len(targets) >= 5
    for rtype, name in targets:
        assert name in hcl.resources(rtype), f"-target={rtype}.{name}: no such resource"
    # The image build needs its account, network path and bucket grant; the pool waits.
    named = {t for t, _ in targets}
    assert {"google_service_account", "google_compute_router_nat"} <= named
    assert not any(t.startswith("google_compute_region_instance_template") for t in named)
    assert not any(t == "google_cloudfunctions2_function" for t in named)
    # The output the bake reads depends on the builder's subnet, which the NAT target brings.
    assert "google_compute_subnetwork.pool[local.image_builder.region].id" in (
        hcl.TERRAFORM / "outputs.tf"
    ).read_text(encoding="utf-8")


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_the_bootstrap_runs_in_a_root_that_calls_the_module(tmp_path):
    example = hcl.TERRAFORM / "examples" / "multi_region"

    def bootstrap(prefix: str) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LC_ALL": "C"}
        env.update(PROJECT_ID=PROJECT, NAME_PREFIX="comfyburst", WORKSPACE=str(tmp_path))
        env.update(TF_DIR=str(example), TF_TARGET_PREFIX=prefix)
        return subprocess.run(
            ["sh", "deploy/terraform-bootstrap.sh", "--dry-run"],
            cwd=hcl.REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = bootstrap("module.comfyburst.")
    assert out.returncode == 0, out.stderr
    assert "-target=module.comfyburst.google_compute_router_nat.pool" in out.stdout
    assert "-target=google_" not in out.stdout
    bad = bootstrap("comfyburst")
    assert bad.returncode == 2 and "TF_TARGET_PREFIX" in bad.stderr
    outputs = hcl.load(example / "outputs.tf")["output"]
    (builder,) = [o["image_builder"] for o in outputs if "image_builder" in o]
    assert builder["value"] == "${module.comfyburst.image_builder}"


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_the_pipeline_keeps_ssh_to_the_pool_closed_unless_asked(tmp_path):
    assert BUILD["substitutions"]["_ALLOW_IAP_SSH"] == "false"
    _pipeline(tmp_path / "default", _TF_STATE_BUCKET="tfstate")
    tfvars = (tmp_path / "default" / "terraform" / "pipeline.auto.tfvars").read_text()
    assert "allow_iap_ssh       = false" in tfvars
    _pipeline(tmp_path / "open", _TF_STATE_BUCKET="tfstate", _ALLOW_IAP_SSH="true")
    tfvars = (tmp_path / "open" / "terraform" / "pipeline.auto.tfvars").read_text()
    assert "allow_iap_ssh       = true" in tfvars
    (init,) = [s for s in STEPS if s["id"] == "terraform-init"]
    overrides = {"_ALLOW_IAP_SSH": "yes", "_TF_STATE_BUCKET": "tfstate"}
    bad = _dry_run(init, tmp_path / "ws", tmp_path / "open" / "terraform", **overrides)
    assert bad.returncode == 2 and "ALLOW_IAP_SSH must be true or false" in bad.stderr


def _bake(tmp_path: Path, env: dict[str, str], output: str) -> subprocess.CompletedProcess:
    """A copy of deploy/ run for real, with packer, gcloud and terraform stand-ins that log their
    arguments (terraform prints `output` as the image_builder output; packer writes a manifest
    into the copy's gpu_image/)."""
    shutil.copytree(hcl.REPO / "deploy", tmp_path / "repo" / "deploy")
    (tmp_path / "repo" / "gpu_image").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool, extra in (("packer", "echo {} >manifest.json\n"), ("gcloud", "")):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >>"{log}"\n{extra}', encoding="utf-8")
        stub.chmod(0o755)
    terraform = bin_dir / "terraform"
    terraform.write_text(
        f'#!/bin/sh\necho "terraform $*" >>"{log}"\nprintf %s "{output}"\n', encoding="utf-8"
    )
    terraform.chmod(0o755)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "build_image").write_text("true\n", encoding="utf-8")
    base = {"PROJECT_ID": PROJECT, "NAME_PREFIX": "comfyburst", "REGION": "us-central1"}
    run_env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "LC_ALL": "C",
        "WORKSPACE": str(workspace),
        "TF_DIR": str(tmp_path / "tf"),
        "ZONES": "us-central1-a",
        **base,
        **env,
    }
    result = subprocess.run(
        ["sh", "deploy/bake.sh"],
        cwd=tmp_path / "repo",
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result.stdout += log.read_text(encoding="utf-8") if log.exists() else ""
    return result


L4_BUILDER = "g2-standard-8 none 0 us-east4-c projects/p/regions/us-east4/subnetworks/cb-pool"


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_the_bake_builds_on_the_default_class_s_machine_and_gpu(tmp_path):
    result = _bake(tmp_path, {}, L4_BUILDER)
    assert result.returncode == 0, result.stderr
    (build,) = [line for line in result.stdout.splitlines() if line.startswith("packer build")]
    for expected in (
        "-var machine_type=g2-standard-8",
        "-var accelerator_count=0",
        "-var zone=us-east4-c",
        "-var subnetwork=projects/p/regions/us-east4/subnetworks/cb-pool",
    ):
        assert expected in build, (expected, build)
    assert "nvidia-tesla-t4" not in result.stdout
    assert f"terraform -chdir={tmp_path / 'tf'} output -raw image_builder" in result.stdout


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_the_bake_s_machine_can_be_told_otherwise(tmp_path):
    told = {"BAKE_MACHINE_TYPE": "n1-standard-8", "BAKE_ACCELERATOR_TYPE": "nvidia-tesla-t4"}
    result = _bake(tmp_path, {**told, "BAKE_ACCELERATOR_COUNT": "1"}, L4_BUILDER)
    assert result.returncode == 0, result.stderr
    (build,) = [line for line in result.stdout.splitlines() if line.startswith("packer build")]
    assert "-var machine_type=n1-standard-8" in build
    assert "-var accelerator_type=nvidia-tesla-t4 -var accelerator_count=1" in build


@pytest.mark.skipif(SH is None, reason="no POSIX sh on this machine")
def test_the_bake_stops_before_packer_without_terraform_s_output(tmp_path):
    result = _bake(tmp_path, {}, "")
    assert result.returncode == 2
    assert "apply terraform first" in result.stderr
    assert "packer build" not in result.stdout


def test_the_packer_source_takes_the_builder_from_its_variables():
    source = hcl.load(hcl.GPU_IMAGE / "image.pkr.hcl")["source"][0]["googlecompute"]["gpu"]
    assert source["machine_type"] == "${var.machine_type}"
    assert source["accelerator_count"] == "${var.accelerator_count}"
    assert source["accelerator_type"].startswith("${var.accelerator_count > 0 ?")
    assert source["metadata"]["install-nvidia-driver"] == "True"
