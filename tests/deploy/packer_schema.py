"""The googlecompute builder's arguments at the pinned plugin version, and a check of image.pkr.hcl.

Packer's only package installable here is Debian's 1.6.6, whose built-in builder predates the
plugin the template pins (versions.pkr.hcl) and which rejects `required_plugins`. So the offline
check is two-part: `packer validate` (1.6.6) on a copy without that block, and this check of every
argument of the `source "googlecompute"` block against the plugin's own HCL2 spec.

The spec extract (packer_googlecompute_schema.json) comes from the plugin's generated
`builder/googlecompute/config.hcl2spec.go` at the release tag (each `"name": &hcldec.…Spec`
entry of FlatConfig.HCL2Spec). Regenerate it from a checkout of
github.com/hashicorp/packer-plugin-googlecompute:

    .venv/bin/python -m tests.deploy.packer_schema extract CHECKOUT TAG
    .venv/bin/python -m tests.deploy.packer_schema check [TEMPLATE]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

from tests.deploy import hcl

EXTRACT = Path(__file__).with_name("packer_googlecompute_schema.json")
SPEC_FILE = "builder/googlecompute/config.hcl2spec.go"
ENTRY = re.compile(r'^\s*"(\w+)":\s*&hcldec\.(\w+)\{')
# Packer core's own keys of a source block, valid for every builder.
CORE_KEYS = {"name"}


def parse_spec(go_source: str) -> dict[str, list[str]]:
    """Arguments and blocks of FlatConfig.HCL2Spec in a generated *.hcl2spec.go file."""
    body = go_source.split("func (*FlatConfig) HCL2Spec()", 1)[1].split("\n}\n", 1)[0]
    arguments, blocks = [], []
    for line in body.splitlines():
        match = ENTRY.match(line)
        if match:
            (blocks if match.group(2).startswith("Block") else arguments).append(match.group(1))
    return {"arguments": sorted(arguments), "blocks": sorted(blocks)}


def extract(checkout: Path, tag: str) -> dict[str, Any]:
    source = subprocess.run(
        ["git", "-C", str(checkout), "show", f"{tag}:{SPEC_FILE}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        "plugin": "github.com/hashicorp/googlecompute",
        "version": tag.removeprefix("v"),
        "made_from": f"{SPEC_FILE} at tag {tag} (tests/deploy/packer_schema.py extract)",
        **parse_spec(source),
    }


@cache
def schema() -> dict[str, Any]:
    return json.loads(EXTRACT.read_text(encoding="utf-8"))


def check(template: Path = hcl.GPU_IMAGE / "image.pkr.hcl") -> list[str]:
    """One line per argument or block of a googlecompute source the pinned plugin lacks."""
    with template.open(encoding="utf-8") as handle:
        document = hcl2.load(handle)
    known = schema()
    arguments, blocks = set(known["arguments"]) | CORE_KEYS, set(known["blocks"])
    problems = []
    for block in document.get("source", []):
        for builder, named in block.items():
            if builder.strip('"') != "googlecompute":
                continue
            for name, body in named.items():
                if name.startswith("__"):
                    continue
                for key, value in body.items():
                    is_block = isinstance(value, list) and all(
                        isinstance(v, dict) and v.get("__is_block__") for v in value
                    )
                    if key.startswith("__") or key in (blocks if is_block else arguments):
                        continue
                    kind = "block" if is_block else "argument"
                    problems.append(
                        f"{template.name}: source.googlecompute.{name.strip(chr(34))}.{key}: "
                        f"unknown {kind} in googlecompute {known['version']}"
                    )
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["extract"] and len(args) == 3:
        EXTRACT.write_text(json.dumps(extract(Path(args[1]), args[2]), indent=1) + "\n")
        print(f"wrote {EXTRACT}", file=sys.stderr)
        return 0
    if args[:1] == ["check"]:
        problems = check(Path(args[1])) if len(args) > 1 else check()
        print("\n".join(problems) or f"googlecompute {schema()['version']}: no problem")
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
