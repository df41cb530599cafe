"""Custom-node packs from extra `custom_nodes` folders, loaded the way ComfyUI loads them.

Each sub-folder holding an `__init__.py` is imported as a module named by its path (dots
replaced, as ComfyUI does), and its `NODE_CLASS_MAPPINGS` become node types: listed in
`/object_info` (inputs from `INPUT_TYPES()`, outputs from `RETURN_TYPES`) and executed by
calling the class's `FUNCTION` with the node's inputs. Only packs whose nodes need nothing but
what the stand-in has (plain Python values, numpy IMAGE batches) run here; a pack whose import
raises is skipped and logged, as ComfyUI does.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .nodes import NodeContext, NodeFunction, NodeResult

log = logging.getLogger(__name__)


@dataclass
class CustomNodes:
    """The node types of the loaded packs: their `/object_info` entries and functions."""

    object_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    functions: dict[str, NodeFunction] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def load_custom_nodes(paths: Iterable[str | Path]) -> CustomNodes:
    """Every pack under each of `paths` (folders of packs)."""
    found = CustomNodes()
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if (p / "__init__.py").is_file()):
            try:
                mappings = _import(folder)
            except Exception:
                log.exception("custom nodes %s failed to import; skipped", folder)
                found.failed.append(str(folder))
                continue
            for name, cls in mappings.items():
                found.object_info[str(name)] = _info(folder.name, str(name), cls)
                found.functions[str(name)] = _function(cls)
    return found


def _import(folder: Path) -> dict[str, Any]:
    module_name = str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(module_name, folder / "__init__.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no module in {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return dict(getattr(module, "NODE_CLASS_MAPPINGS", {}) or {})


def _info(pack: str, name: str, cls: Any) -> dict[str, Any]:
    spec = cls.INPUT_TYPES() or {}
    groups = {k: dict(spec[k]) for k in ("required", "optional") if k in spec}
    outputs = list(getattr(cls, "RETURN_TYPES", ()) or ())
    return {
        "input": groups,
        "input_order": {k: list(v) for k, v in groups.items()},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs) or outputs),
        "name": name,
        "display_name": name,
        "description": "",
        "python_module": f"custom_nodes.{pack}",
        "category": str(getattr(cls, "CATEGORY", "") or ""),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }


def _function(cls: Any) -> NodeFunction:
    def run(ctx: NodeContext, **inputs: Any) -> NodeResult:
        answer = getattr(cls(), cls.FUNCTION)(**inputs)
        if isinstance(answer, dict):  # {"ui": ..., "result": (...)}, as output nodes answer
            return NodeResult(tuple(answer.get("result") or ()), answer.get("ui"))
        return NodeResult(tuple(answer or ()))

    return run
