"""The node package's shape: ComfyUI is reached through `_comfy.py` only, and the modules
import each other one way (issue 17's rules, held by reading the code's imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import comfy_node

COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_extras", "server", "folder_paths", "nodes"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add("." * node.level + node.module)
        elif isinstance(node, ast.ImportFrom):  # from . import a, b
            found |= {"." * node.level + alias.name for alias in node.names}
    return found


def test_only_the_edge_module_imports_comfyui() -> None:
    package = Path(comfy_node.__file__).parent
    for path in sorted(package.glob("*.py")):
        reaching = {name for name in _imports(path) if name.split(".")[0] in COMFYUI_MODULES}
        if path.name == "_comfy.py":
            assert reaching, "the edge module is where ComfyUI is imported"
        else:
            assert not reaching, f"{path.name} imports {sorted(reaching)}: use _comfy"


def test_node_modules_import_each_other_one_way() -> None:
    package = Path(comfy_node.__file__).parent
    graph = {
        path.stem: {
            name.lstrip(".").split(".")[0] for name in _imports(path) if name.startswith(".")
        }
        for path in package.glob("*.py")
    }

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(
            nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt}))
            for nxt in graph.get(start, set())
        )

    cycles = sorted(module for module in graph if reaches(module, module, {module}))
    assert cycles == [], f"import cycle through {cycles}"
