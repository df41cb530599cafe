"""Regenerate tests/deploy/provider_schema.json from the prebuilt CDK Terrain provider packages.

How the extract is made: each `cdktn-provider-<name>` wheel on PyPI carries the jsii assembly
(`_jsii/*.jsii.tgz` -> `package/.jsii`) that CDK Terrain generates from the provider's own
`terraform providers schema -json` at the version named in the package's `package.json`
(`cdktf.provider.version`). For every resource and data source class the assembly names the
Terraform type (`{@link …/docs/resources/TYPE google_TYPE}`), and every property of its config
struct links the Terraform argument (`…#argument_name`); a property whose type is another struct
(or a list/set of them) is a nested block. This script walks those structs and writes, per
provider: every resource and data-source type name, and the arguments and nested blocks of the
types the deployment uses or may use (FAMILIES below, plus every type named in terraform/).

Run it after changing a provider pin (versions.tf) or using a new resource type outside FAMILIES:

    .venv/bin/python -m tests.deploy.extract_provider_schema   # downloads the wheels with pip

It needs the package registry (pip download); the check itself (tests/test_deploy_schema.py)
reads only the checked-in JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tests.deploy import hcl, provider_schema

OUTPUT = Path(__file__).with_name("provider_schema.json")

# provider local name -> (registry source, PyPI package pinned to the provider version wanted).
PACKAGES = {
    "google": ("hashicorp/google", "cdktn-provider-google==21.1.0"),
    "google-beta": ("hashicorp/google-beta", "cdktn-provider-google-beta==21.1.0"),
    "archive": ("hashicorp/archive", "cdktn-provider-archive==14.0.1"),
    "time": ("hashicorp/time", "cdktn-provider-time==14.0.2"),
}

# Type-name prefixes whose full schema is kept, so a new resource of a service the deployment
# already uses (e.g. an instance template) is checked without regenerating.
FAMILIES = (
    "google_artifact_registry_",
    "google_cloud_run_v2_",
    "google_cloud_scheduler_",
    "google_cloudbuild_",
    "google_cloudfunctions2_",
    "google_compute_",
    "google_eventarc_",
    "google_firestore_",
    "google_logging_metric",
    "google_monitoring_",
    "google_project",
    "google_pubsub_",
    "google_secret_manager_",
    "google_service_account",
    "google_storage_",
    "archive_",
    "time_",
)

TYPE_LINK = re.compile(r"/docs/(resources|data-sources)/\w+ (\w+)\}")
ARG_LINK = re.compile(r"#(\w+) \w+#\w+\}")
BASES = {"TerraformResource": "resources", "TerraformDataSource": "data_sources"}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _struct_fqns(type_ref: dict[str, Any], types: dict[str, Any]) -> list[str]:
    """Provider structs a property's type refers to (directly, in a collection or a union)."""
    if "fqn" in type_ref:
        if type_ref["fqn"].startswith(("cdktn.", "cdktf.")):  # IResolvable and the like
            return []
        target = types.get(type_ref["fqn"])
        return [type_ref["fqn"]] if target and target["kind"] == "interface" else []
    if "collection" in type_ref:
        return _struct_fqns(type_ref["collection"]["elementtype"], types)
    if "union" in type_ref:
        return [f for t in type_ref["union"]["types"] for f in _struct_fqns(t, types)]
    return []


def _struct(fqn: str, types: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """{"arguments": [...], "blocks": {name: struct}} of one config struct."""
    arguments: set[str] = set()
    blocks: dict[str, Any] = {}
    for prop in types[fqn].get("properties", []):
        docs = prop.get("docs", {})
        link = ARG_LINK.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
        name = link.group(1) if link else _snake(prop["name"])
        nested = [f for f in _struct_fqns(prop["type"], types) if f not in seen]
        if nested:
            blocks[name] = _struct(nested[0], types, (*seen, fqn))
        else:
            arguments.add(name)
    return {"arguments": sorted(arguments), "blocks": dict(sorted(blocks.items()))}


def _assembly(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as archive:
        inner = next(n for n in archive.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(archive.read(inner))) as tgz:
            member = tgz.extractfile("package/.jsii")
            package = tgz.extractfile("package/package.json")
            assert member is not None and package is not None
            assembly = json.load(member)
            assembly["_package_json"] = json.load(package)
    return assembly


def used_types() -> dict[str, set[str]]:
    """Provider local name -> resource and data-source types terraform/ uses from it."""
    used: dict[str, set[str]] = {}
    for path in hcl.files(hcl.TERRAFORM, ".tf"):
        for kind in ("resource", "data"):
            for block in hcl.load(path).get(kind, []):
                for type_name, named in block.items():
                    for body in named.values():
                        local = provider_schema.provider_of(type_name, body)
                        used.setdefault(local, set()).add(type_name)
    return used


def extract(
    wheel: Path, source: str, package: str, wanted: set[str], families: tuple[str, ...]
) -> dict[str, Any]:
    assembly = _assembly(wheel)
    types = assembly["types"]
    provider = assembly["_package_json"]["cdktf"]["provider"]
    out: dict[str, Any] = {
        "source": source,
        "version": provider["version"],
        "package": package,
        "resource_types": [],
        "data_source_types": [],
        "resources": {},
        "data_sources": {},
    }
    for body in types.values():
        if body["kind"] == "class" and str(body.get("base", "")).endswith(".TerraformProvider"):
            params = body.get("initializer", {}).get("parameters", [])
            config = next(p["type"]["fqn"] for p in params if p["name"] == "config")
            out["provider"] = _struct(config, types)
            continue
        kind = BASES.get(str(body.get("base", "")).rpartition(".")[2])
        link = TYPE_LINK.search(body.get("docs", {}).get("summary", ""))
        if body["kind"] != "class" or kind is None or link is None:
            continue
        type_name = link.group(2)
        out["resource_types" if kind == "resources" else "data_source_types"].append(type_name)
        if type_name in wanted or type_name.startswith(families):
            params = body.get("initializer", {}).get("parameters", [])
            config = next(p["type"]["fqn"] for p in params if p["name"] == "config")
            out[kind][type_name] = _struct(config, types)
    for key in ("resource_types", "data_source_types"):
        out[key].sort()
    for key in ("resources", "data_sources"):
        out[key] = dict(sorted(out[key].items()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, help="folder that already holds the wheels")
    args = parser.parse_args(argv)
    used = used_types()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.wheels or Path(tmp)
        if args.wheels is None:
            specs = [spec for _, spec in PACKAGES.values()]
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(folder)]
            subprocess.run([*pip, *specs], check=True)
        providers = {}
        for local, (source, spec) in PACKAGES.items():
            name, _, version = spec.partition("==")
            pattern = f"{name.replace('-', '_')}-{version}-*.whl"
            wheel = next(folder.glob(pattern))
            # google-beta only for the few types that need it (provider = google-beta).
            families = () if local == "google-beta" else FAMILIES
            wanted = used.get(local, set())
            providers[local] = extract(wheel, source, spec, wanted, families)
            print(f"{local}: {providers[local]['version']} from {spec}", file=sys.stderr)
    document = {
        "about": "Arguments and nested blocks of Terraform provider schemas, extracted by "
        "tests/deploy/extract_provider_schema.py from the CDK Terrain prebuilt provider "
        "packages named per provider; see that script's docstring.",
        "providers": providers,
    }
    OUTPUT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
