"""Read Terraform and Packer HCL with python-hcl2 into plain, unquoted Python data."""

from __future__ import annotations

import os
import shutil
import sys
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
GPU_IMAGE = REPO / "gpu_image"
SKIP_DIRS = {".git", ".terraform", "node_modules", "__pycache__"}


def _unquote(value: Any) -> Any:
    """python-hcl2 8 keeps string quotes and adds `__is_block__`; drop both."""
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@cache
def load(path: Path) -> dict[str, Any]:
    """One HCL file as unquoted data."""
    with path.open(encoding="utf-8") as handle:
        return _unquote(hcl2.load(handle))


def files(root: Path, suffix: str) -> list[Path]:
    """Every file under root ending in suffix, skipping tool caches."""
    return sorted(
        p for p in root.rglob(f"*{suffix}") if not SKIP_DIRS.intersection(p.relative_to(root).parts)
    )


def module_files(root: Path = TERRAFORM) -> list[Path]:
    """The .tf files of one module (not its examples)."""
    return sorted(root.glob("*.tf"))


def blocks(kind: str, root: Path = TERRAFORM) -> list[dict[str, Any]]:
    """All top-level blocks of a kind (resource, variable, locals, output...) of a module."""
    found: list[dict[str, Any]] = []
    for path in module_files(root):
        found.extend(load(path).get(kind, []))
    return found


def resources(rtype: str) -> dict[str, dict[str, Any]]:
    """Resources (or data sources via 'data.TYPE') of the root module by name."""
    kind, _, wanted = rtype.rpartition(".")
    found: dict[str, dict[str, Any]] = {}
    for block in blocks(kind or "resource"):
        for name, body in block.get(wanted, {}).items():
            found[name] = body
    return found


def locals_() -> dict[str, Any]:
    """Every `locals` entry of the root module."""
    merged: dict[str, Any] = {}
    for block in blocks("locals"):
        merged.update(block)
    return merged


def variables(root: Path = TERRAFORM) -> dict[str, dict[str, Any]]:
    """Variable blocks of a module by name."""
    merged: dict[str, dict[str, Any]] = {}
    for block in blocks("variable", root):
        merged.update(block)
    return merged


def tool(name: str) -> str | None:
    """A tool from the project venv's bin folder first, then PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)
