"""Check every argument and block in terraform/ against the pinned providers' schemas.

The schemas come from tests/deploy/provider_schema.json (made by extract_provider_schema.py from
the prebuilt provider packages at the pinned versions). Offline: nothing is downloaded.

    .venv/bin/python -m tests.deploy.provider_schema [FOLDER]   # exit 1 and one line per problem
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

from tests.deploy import hcl

EXTRACT = Path(__file__).with_name("provider_schema.json")

# Terraform's own meta-arguments and blocks, valid in every resource / data block.
META_ARGUMENTS = {"count", "for_each", "provider", "depends_on"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}
DATA_META_BLOCKS = {"lifecycle"}


@dataclass(frozen=True)
class Problem:
    path: Path
    address: str
    where: str
    message: str

    def __str__(self) -> str:
        location = f"{self.address}.{self.where}" if self.where else self.address
        return f"{self.path}: {location}: {self.message}"


@cache
def extract() -> dict[str, Any]:
    return json.loads(EXTRACT.read_text(encoding="utf-8"))


def _name(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _is_block(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
    )


def provider_of(type_name: str, body: dict[str, Any]) -> str:
    """Local provider name: the `provider` meta-argument, else the type's prefix."""
    chosen = body.get("provider")
    if isinstance(chosen, str):
        return _name(chosen).strip("${}").split(".")[0]
    return type_name.split("_", 1)[0]


def _check_body(
    body: dict[str, Any], schema: dict[str, Any], where: str, top: bool, data: bool
) -> list[tuple[str, str]]:
    """(where, message) for each key of body the schema does not know."""
    found: list[tuple[str, str]] = []
    arguments = set(schema["arguments"])
    blocks = schema["blocks"]
    meta_blocks = (DATA_META_BLOCKS if data else META_BLOCKS) if top else set()
    for key, value in body.items():
        if key.startswith("__"):  # python-hcl2's __is_block__ and __comments__
            continue
        here = f"{where}.{key}" if where else key
        if key == "dynamic" and isinstance(value, list):
            for entry in value:
                for label, dyn in entry.items():
                    if label.startswith("__"):
                        continue
                    block = _name(label)
                    if block not in blocks:
                        found.append((f"{where}.{block}" if where else block, "unknown block"))
                        continue
                    for content in dyn.get("content", []):
                        inner = f"{where}.{block}" if where else block
                        found += _check_body(content, blocks[block], inner, False, data)
            continue
        if _is_block(value):
            if top and key in meta_blocks:
                continue
            if key not in blocks:
                hint = " (an argument here: write `=`)" if key in arguments else ""
                found.append((here, f"unknown block{hint}"))
                continue
            for entry in value:
                found += _check_body(entry, blocks[key], here, False, data)
        elif top and key in META_ARGUMENTS:
            continue
        elif key not in arguments:
            hint = " (a block here: drop the `=`)" if key in blocks else ""
            found.append((here, f"unknown argument{hint}"))
    return found


def check_file(path: Path) -> list[Problem]:
    with path.open(encoding="utf-8") as handle:
        document = hcl2.load(handle)
    providers = extract()["providers"]
    problems: list[Problem] = []
    for block in document.get("provider", []):
        for raw_local, body in block.items():
            local = _name(raw_local)
            provider = providers.get(local)
            if provider is None:
                problems.append(Problem(path, f"provider.{local}", "", "no schema for provider"))
                continue
            label = f"{local} {provider['version']}"
            meta = {"alias": None}
            config = {k: v for k, v in body.items() if k not in meta}
            for where, message in _check_body(config, provider["provider"], "", False, False):
                problems.append(Problem(path, f"provider.{local}", where, f"{message} in {label}"))
    for kind, section, types_key in (
        ("resource", "resources", "resource_types"),
        ("data", "data_sources", "data_source_types"),
    ):
        for block in document.get(kind, []):
            for raw_type, named in block.items():
                type_name = _name(raw_type)
                for raw_name, body in named.items():
                    if raw_name.startswith("__"):
                        continue
                    prefix = "data." if kind == "data" else ""
                    address = f"{prefix}{type_name}.{_name(raw_name)}"
                    local = provider_of(type_name, body)
                    provider = providers.get(local)
                    if provider is None:
                        problems.append(
                            Problem(path, address, "", f"no schema for provider {local}")
                        )
                        continue
                    label = f"{local} {provider['version']}"
                    schema = provider[section].get(type_name)
                    if schema is None:
                        known = type_name in provider[types_key]
                        message = (
                            f"{label} has this type, but the extract lacks its schema: run "
                            "`python -m tests.deploy.extract_provider_schema`"
                            if known
                            else f"{label} has no {kind} type {type_name}"
                        )
                        problems.append(Problem(path, address, "", message))
                        continue
                    for where, message in _check_body(body, schema, "", True, kind == "data"):
                        problems.append(Problem(path, address, where, f"{message} in {label}"))
    return problems


def check(root: Path = hcl.TERRAFORM) -> list[Problem]:
    """Problems in every .tf file under root (the module and its examples)."""
    return [p for path in hcl.files(root, ".tf") for p in check_file(path)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else hcl.TERRAFORM
    problems = check(root)
    for problem in problems:
        print(problem)
    versions = {k: v["version"] for k, v in extract()["providers"].items()}
    print(f"{len(problems)} problem(s) against {versions}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
