"""Offline checks of the deploy files: HCL parses, Terraform style, module conventions."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy import hcl, packer_schema

TF_FILES = hcl.files(hcl.TERRAFORM, ".tf")
PKR_FILES = hcl.files(hcl.GPU_IMAGE, ".pkr.hcl")
MODULES = [hcl.TERRAFORM, *(hcl.TERRAFORM / "examples" / n for n in ("minimal", "multi_region"))]


@pytest.mark.parametrize("path", TF_FILES + PKR_FILES, ids=lambda p: str(p.relative_to(hcl.REPO)))
def test_hcl_file_parses(path):
    assert isinstance(hcl.load(path), dict)


def test_expected_files_exist():
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (hcl.TERRAFORM / name).is_file(), name
    for name in ("image.pkr.hcl", "variables.pkr.hcl", "versions.pkr.hcl"):
        assert (hcl.GPU_IMAGE / name).is_file(), name
    assert (hcl.TERRAFORM / "examples" / "minimal" / "main.tf").is_file()


def test_terraform_fmt_check():
    terraform = hcl.tool("terraform")
    if terraform is None:
        pytest.skip("terraform not installed: pip install -r requirements-dev.txt")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(hcl.TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_every_variable_is_typed_and_described(module):
    variables = hcl.variables(module)
    assert variables
    for name, body in variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert body.get("description"), f"variable {name} has no description"


def test_every_output_is_described():
    for block in hcl.blocks("output"):
        for name, body in block.items():
            assert body.get("description"), f"output {name} has no description"


def test_unit_suffixes_on_durations_and_sizes():
    # A number variable about time or size says its unit in its name.
    unitless = re.compile(r"(timeout|retention|interval|grace|ttl|size|memory)$")
    for name, body in hcl.variables().items():
        if body["type"] == "${number}":
            assert not unitless.search(name), f"{name} needs a unit suffix (_s, _days, _gb, _mb)"


def test_provider_versions_are_exact_pins():
    # Exact, so the schema check (tests/test_deploy_schema.py) checks what `init` installs.
    for module in MODULES:
        terraform = hcl.load(module / "versions.tf")["terraform"][0]
        providers = terraform["required_providers"][0]
        for name, provider in providers.items():
            if not name.startswith("__"):
                assert re.fullmatch(r"\d+\.\d+\.\d+", provider["version"]), (name, provider)


def test_packer_pins_the_googlecompute_plugin_it_is_checked_against():
    packer = hcl.load(hcl.GPU_IMAGE / "versions.pkr.hcl")["packer"][0]
    # Official Packer binaries before 1.8.1 cannot SSH to Ubuntu 22.04; 1.11 loads plugins only
    # from `packer init`.
    assert packer["required_version"] == ">= 1.11.0"
    plugin = packer["required_plugins"][0]["googlecompute"]
    assert plugin["source"] == "github.com/hashicorp/googlecompute"
    assert plugin["version"] == f"= {packer_schema.schema()['version']}"
