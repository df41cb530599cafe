"""The house rules, held by the code's own imports (read with ast, nothing imported).

- Nothing deployable (functions/, gpu_image/worker/, comfy_node/) imports the local cloud.
- No import cycle among our modules. Module-level and function-level imports both count: an
  import deferred into a function is still an arrow between the two modules, only a later one.
  Imports under `if TYPE_CHECKING:` do not: they never run (a mixin naming its host class).
  An edge goes to the module named (`from a.b import c` reaches `a.b.c` when that is a module,
  else `a.b`); the parent packages that Python runs on the way are not counted as edges.
- ComfyUI's own modules (`comfy`, `server`, `folder_paths`, …) only in comfy_node/_comfy.py.
- docs/ARCHITECTURE.md's layout table names only paths that exist and every top-level package.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Where each of our top-level packages lives (import name -> folder that holds it).
PACKAGE_ROOTS: dict[str, Path] = {
    "comfyburst": REPO / "functions",
    "main": REPO / "functions",  # functions/main.py, the Cloud Functions' entry points
    "comfyburst_worker": REPO / "gpu_image" / "worker",
    "comfy_node": REPO,
    "comfyburst_cli": REPO / "cli",
    "localcloud": REPO,
    "tools": REPO,
    "tests": REPO,
}
DEPLOYABLE = ("comfyburst", "main", "comfyburst_worker", "comfy_node")
COMFYUI_MODULES = {"comfy", "comfy_extras", "server", "folder_paths", "nodes", "execution"}
COMFY_EDGE = "comfy_node._comfy"
SKIPPED_DIRS = {"node_modules", "__pycache__", "web", "schemas"}


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name as written (resolved for relative imports)
    names: tuple[str, ...]  # for `from X import a, b`; () for `import X`
    line: int


def _module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, root in PACKAGE_ROOTS.items():
        single = root / f"{package}.py"
        if single.is_file():
            found[package] = single
            continue
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if SKIPPED_DIRS & set(rel.parts) or any(p.endswith(".egg-info") for p in rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(tree: ast.AST) -> list[ast.AST]:
    """Every node but the bodies of `if TYPE_CHECKING:` (never run; only the type checker
    reads them, and it handles a cycle there)."""
    found: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if _is_type_checking(node):
            assert isinstance(node, ast.If)
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in _walk_runtime(tree):  # every import, at module level or inside a function
        if isinstance(node, ast.Import):
            found += [Import(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not _is_package(module):
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(base, tuple(a.name for a in node.names), node.lineno))
    return found


def _edges(module: str) -> set[str]:
    targets: set[str] = set()
    for imp in _imports(module):
        named = [f"{imp.target}.{name}" for name in imp.names if f"{imp.target}.{name}" in MODULES]
        if named:
            targets.update(named)
        if len(named) < len(imp.names) or not imp.names:
            # A name that is not a submodule comes from the module itself; `import a.b`
            # reaches a.b (or the nearest of our modules above a name that is not one).
            parts = imp.target.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            if parts:
                targets.add(".".join(parts))
    targets.discard(module)
    return targets


GRAPH = {module: _edges(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(GRAPH):
        if root in index:
            continue
        work = [(root, iter(sorted(GRAPH[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(GRAPH[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_every_package_and_their_arrows() -> None:
    """Guards the checks below against an empty or blind graph."""
    assert {m.split(".")[0] for m in MODULES} == set(PACKAGE_ROOTS)
    assert "comfyburst.services.reap" in GRAPH["main"]
    assert "comfyburst.schema" in GRAPH["comfyburst.services.submit"]
    assert "comfy_node.nodes" in GRAPH["comfy_node"]  # a relative import, resolved


def test_nothing_deployable_imports_the_local_cloud() -> None:
    reaching = sorted(
        f"{module} ({MODULES[module].relative_to(REPO)}:{imp.line}) imports {imp.target}"
        for module in MODULES
        if module.split(".")[0] in DEPLOYABLE
        for imp in _imports(module)
        if imp.target.split(".")[0] in {"localcloud", "tests", "tools", "comfyburst_cli"}
    )
    assert reaching == []


def test_no_import_cycle_among_our_modules() -> None:
    assert _cycles() == []


def test_a_cycle_would_be_found() -> None:
    """The detector itself: a two-module loop added to the graph is reported."""
    saved = {k: set(v) for k, v in GRAPH.items()}
    try:
        GRAPH["comfyburst.schema"].add("comfyburst.services.submit")
        assert any("comfyburst.schema" in cycle for cycle in _cycles())
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


@pytest.mark.parametrize("package", ["comfy_node", "comfyburst", "comfyburst_worker"])
def test_comfyui_is_imported_only_by_the_node_edge(package: str) -> None:
    reaching = sorted(
        f"{module}:{imp.line} imports {imp.target}"
        for module in MODULES
        if module.split(".")[0] == package and module != COMFY_EDGE
        for imp in _imports(module)
        if imp.target.split(".")[0] in COMFYUI_MODULES
    )
    assert reaching == []
    if package == "comfy_node":
        assert any(i.target.split(".")[0] == "comfy" for i in _imports(COMFY_EDGE))


def _layout_table() -> list[str]:
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Layout of the code", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "the layout table has no rows"
    return [cell for row in rows for cell in re.findall(r"`([^`]+)`", row.split("|")[1])]


def test_every_path_in_the_layout_table_exists() -> None:
    missing = []
    for named in _layout_table():
        # `tests/deploy/`, `gpu_image/*.pkr.hcl`: a folder, a file, or a glob that matches.
        if "*" in named:
            if not list(REPO.glob(named)):
                missing.append(named)
        elif not (REPO / named.rstrip("/")).exists():
            missing.append(named)
    assert missing == []


def test_every_top_level_package_is_in_the_layout_table() -> None:
    named = {p.rstrip("/") for p in _layout_table()}
    folders = {str(root.relative_to(REPO) / package) for package, root in PACKAGE_ROOTS.items()}
    folders = {f.removeprefix("./") for f in folders} - {"tests", "functions/main"}
    folders |= {"functions/main.py", "terraform", "deploy", "gpu_image/scripts", "tests/bake"}
    assert sorted(folders - named) == []


def test_adapters_and_domain_never_import_services_api_or_wiring() -> None:
    """Arrows run one way: entry points -> services -> domain/adapters -> ports/schema."""
    upward = {"services", "api", "wiring"}
    reaching = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[:2] in (["comfyburst", "adapters"], ["comfyburst", "domain"])
        for target in targets
        if target.split(".")[0] == "comfyburst" and target.split(".")[1:2] in [[u] for u in upward]
    )
    assert reaching == []
