"""Every argument and block in terraform/ exists in the pinned providers' schemas (offline)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import hcl, provider_schema

PROVIDERS = provider_schema.extract()["providers"]


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "terraform"
    shutil.copytree(hcl.TERRAFORM, root, ignore=shutil.ignore_patterns(".terraform*"))
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_module_and_its_example_match_the_pinned_schemas():
    problems = provider_schema.check()
    assert not problems, "\n".join(map(str, problems))
    checked = {p.name for p in hcl.files(hcl.TERRAFORM, ".tf")}
    assert {"functions.tf", "iam.tf", "main.tf"} <= checked


@pytest.mark.parametrize(
    ("file", "old", "new", "where"),
    [
        # a top-level argument
        (
            "storage.tf",
            '  public_access_prevention    = "enforced"\n  force_destroy               = true',
            '  public_access_preventon     = "enforced"\n  force_destroy               = true',
            "google_storage_bucket.function_source.public_access_preventon",
        ),
        # an argument two blocks deep
        (
            "functions.tf",
            '      attribute = "bucket"',
            '      atribute = "bucket"',
            "google_cloudfunctions2_function.on_done_flag.event_trigger.event_filters.atribute",
        ),
        # a block name inside a dynamic block's content
        (
            "storage.tf",
            "      condition {\n        age = lifecycle_rule.value",
            "      conditions {\n        age = lifecycle_rule.value",
            "google_storage_bucket.models.lifecycle_rule.conditions",
        ),
        # a data source argument
        (
            "functions.tf",
            "  source_dir  = local.functions_dir",
            "  source_dirs = local.functions_dir",
            "data.archive_file.functions.source_dirs",
        ),
        # a google-beta resource
        (
            "iam.tf",
            "  service = each.value\n",
            "  servce = each.value\n",
            "google_project_service_identity.agent.servce",
        ),
    ],
    ids=["argument", "nested", "dynamic", "data-source", "beta"],
)
def test_one_typo_in_a_copy_is_reported(tmp_path, file, old, new, where):
    root = _copy(tmp_path)
    _edit(root / file, old, new)
    problems = provider_schema.check(root)
    assert [f"{p.address}.{p.where}" for p in problems] == [where], problems
    assert "unknown" in problems[0].message


def test_a_misspelled_resource_type_is_reported(tmp_path):
    root = _copy(tmp_path)
    _edit(
        root / "pubsub.tf",
        'resource "google_pubsub_topic" "results" {',
        'resource "google_pubsub_topik" "results" {',
    )
    problems = [str(p) for p in provider_schema.check(root)]
    assert len(problems) == 1 and "has no resource type google_pubsub_topik" in problems[0]


def test_an_argument_written_as_a_block_is_reported(tmp_path):
    root = _copy(tmp_path)
    _edit(
        root / "storage.tf",
        "  labels                      = local.labels\n\n  lifecycle_rule {\n"
        "    condition {\n      age = var.function_source_retention_days",
        "  labels                      = local.labels\n\n  lifecycle_rule {\n"
        "    condition {\n      age {}\n      x = var.function_source_retention_days",
    )
    problems = [str(p) for p in provider_schema.check(root)]
    assert any("condition.age: unknown block (an argument here" in p for p in problems), problems


def test_a_provider_block_argument_is_checked(tmp_path):
    root = _copy(tmp_path)
    _edit(
        root / "examples" / "minimal" / "main.tf",
        "  region  = var.region\n}\n\n# The module",
        "  regoin  = var.region\n}\n\n# The module",
    )
    problems = [str(p) for p in provider_schema.check(root)]
    assert len(problems) == 1 and "provider.google.regoin: unknown argument" in problems[0]


def test_the_command_line_fails_on_a_typo_and_passes_on_the_module(tmp_path):
    run = [sys.executable, "-m", "tests.deploy.provider_schema"]
    good = subprocess.run(run, cwd=hcl.REPO, capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    root = _copy(tmp_path)
    _edit(
        root / "network.tf",
        "  ip_cidr_range            = each.value",
        "  ip_cidr_rang             = each.value",
    )
    bad = subprocess.run(
        [*run, str(root)], cwd=hcl.REPO, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert "google_compute_subnetwork.pool.ip_cidr_rang: unknown argument" in bad.stdout


@pytest.mark.parametrize(
    "module",
    [hcl.TERRAFORM, *(hcl.TERRAFORM / "examples" / n for n in ("minimal", "multi_region"))],
    ids=["module", "example", "multi-region-example"],
)
def test_versions_tf_pins_exactly_the_versions_the_extract_describes(module):
    required = hcl.load(module / "versions.tf")["terraform"][0]["required_providers"][0]
    assert {"google", "google-beta"} <= set(required)
    for local, pin in required.items():
        if local.startswith("__"):  # python-hcl2's __comments__
            continue
        described = PROVIDERS[local]
        assert pin["source"] == described["source"], local
        assert pin["version"] == described["version"], f"{local}: pin {pin['version']}"


def test_the_extract_says_where_each_schema_comes_from():
    for local, provider in PROVIDERS.items():
        name, _, version = provider["package"].partition("==")
        assert name.startswith("cdktn-provider-") and version, local
        assert provider["resources"] or provider["data_sources"], local
        assert provider["provider"]["arguments"], local
    google = PROVIDERS["google"]
    # A GA-only view: google_project_service_identity exists only in google-beta.
    assert "google_project_service_identity" not in google["resource_types"]
    assert "google_project_service_identity" in PROVIDERS["google-beta"]["resource_types"]
    instance = google["resources"]["google_compute_instance"]
    assert "initialize_params" in instance["blocks"]["boot_disk"]["blocks"]
    assert "machine_type" in instance["arguments"]


def _wheel(tmp_path: Path, types: dict) -> Path:
    """A wheel shaped like a cdktn provider package, with a tiny jsii assembly."""
    import io
    import json
    import tarfile
    import zipfile

    package = {"name": "@cdktn/provider-demo", "cdktf": {"provider": {"version": "1.2.3"}}}
    blobs = {
        "package/.jsii": json.dumps({"types": types}).encode(),
        "package/package.json": json.dumps(package).encode(),
    }
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as archive:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    wheel = tmp_path / "cdktn_provider_demo-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("cdktn_provider_demo/_jsii/provider-demo@9.9.9.jsii.tgz", tgz.getvalue())
    return wheel


def test_the_extractor_reads_types_arguments_and_nested_blocks(tmp_path):
    from tests.deploy import extract_provider_schema as extractor

    link = "https://registry.terraform.io/providers/hashicorp/demo/1.2.3/docs/resources/thing"

    def prop(name, anchor, type_ref):
        remarks = f"Docs at Terraform Registry: {{@link {link}#{anchor} Thing#{anchor}}}"
        return {"name": name, "docs": {"remarks": remarks}, "type": type_ref}

    types = {
        "demo.Thing": {
            "kind": "class",
            "base": "cdktn.TerraformResource",
            "docs": {"summary": f"Represents a {{@link {link} demo_thing}}."},
            "initializer": {"parameters": [{"name": "config", "type": {"fqn": "demo.Config"}}]},
        },
        "demo.Config": {
            "kind": "interface",
            "properties": [
                prop("machineType", "machine_type", {"primitive": "string"}),
                prop("ipv6Range", "ipv6_range", {"primitive": "string"}),
                prop("bootDisk", "boot_disk", {"fqn": "demo.BootDisk"}),
                prop(
                    "rule",
                    "rule",
                    {
                        "union": {
                            "types": [
                                {"fqn": "cdktn.IResolvable"},
                                {
                                    "collection": {
                                        "kind": "array",
                                        "elementtype": {"fqn": "demo.Rule"},
                                    }
                                },
                            ]
                        }
                    },
                ),
                {"name": "noLinkHere", "docs": {}, "type": {"primitive": "string"}},
            ],
        },
        "demo.BootDisk": {
            "kind": "interface",
            "properties": [prop("sizeGb", "size", {"primitive": "number"})],
        },
        "demo.Rule": {"kind": "interface", "properties": [prop("action", "action", {})]},
        "cdktn.IResolvable": {"kind": "interface", "properties": []},
    }
    out = extractor.extract(_wheel(tmp_path, types), "hashicorp/demo", "x==1", set(), ("demo_",))
    assert out["version"] == "1.2.3" and out["resource_types"] == ["demo_thing"]
    assert out["resources"]["demo_thing"] == {
        "arguments": ["ipv6_range", "machine_type", "no_link_here"],
        "blocks": {
            "boot_disk": {"arguments": ["size"], "blocks": {}},
            "rule": {"arguments": ["action"], "blocks": {}},
        },
    }
