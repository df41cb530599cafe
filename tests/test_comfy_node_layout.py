"""The node package's shape: ComfyUI is reached through `_comfy.py` only, the modules import
each other one way (issue 17's rules, held by reading the code's imports), and the core comes
from the node's own generated copy, current with functions/comfyburst/ (issue 22)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import comfy_node
from tools import vendor_core

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


def test_node_imports_the_core_from_its_private_copy_only() -> None:
    """ComfyUI's environment may hold another `comfyburst`: the node uses its own copy."""
    package = Path(comfy_node.__file__).parent
    for path in sorted(package.glob("*.py")):
        shared = {name for name in _imports(path) if name.split(".")[0] == "comfyburst"}
        assert not shared, f"{path.name} imports {sorted(shared)}: use ._vendor.comfyburst_core"


def test_the_checkouts_core_copy_is_the_source_today() -> None:
    """The node imports comfy_node/_vendor/ (generated): stale, it would test old code."""
    stale = vendor_core.differences(Path(comfy_node.__file__).parent / "_vendor")
    assert stale == [], f"run `make node-core` (python -m tools.vendor_core): {stale}"


def test_the_copy_tool_refuses_what_it_cannot_make_private() -> None:
    modules = vendor_core.core_modules()
    assert vendor_core.rewrite("from comfyburst.states import X\n", modules) == (
        "from .states import X\n"
    )
    for source in ("import comfyburst.schema\n", "from comfyburst.adapters import gcs\n"):
        with pytest.raises(vendor_core.VendorError):
            vendor_core.rewrite(source, modules)


def test_the_copy_tool_replaces_only_its_own_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("hand-written")
    with pytest.raises(vendor_core.VendorError, match="not written by this tool"):
        vendor_core.write(tmp_path / "mine")
    dest = tmp_path / "_vendor"
    vendor_core.write(dest)
    (dest / "comfyburst_core" / "stale.py").write_text("")
    assert vendor_core.differences(dest) == ["extra comfyburst_core/stale.py"]
    vendor_core.write(dest)
    assert vendor_core.differences(dest) == []
