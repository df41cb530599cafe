"""Custom-node packs from extra `custom_nodes` folders, loaded the way ComfyUI loads them.

Each entry of a `custom_nodes` folder is one pack: a sub-folder is imported from its
`__init__.py` as a module named by its path (dots replaced, as ComfyUI does), a single `.py`
file as a module of its own; `__pycache__`, other files and names ending `.disabled` are
passed over. A pack's `NODE_CLASS_MAPPINGS` become node types (never replacing a core node):
listed in `/object_info` (inputs from `INPUT_TYPES()`, outputs from `RETURN_TYPES`, the name
from `NODE_DISPLAY_NAME_MAPPINGS`) and executed by calling the class's `FUNCTION` with the
node's inputs. A pack whose import raises, or that maps no nodes, is logged "(IMPORT FAILED)"
and skipped, as ComfyUI does; the others load.

What a pack node may take and return here: plain Python values (STRING, INT, FLOAT,
BOOLEAN, combo choices) and the stand-in's IMAGE batches, float32 numpy arrays shaped
(batch, height, width, 3) in [0, 1] (nodes.py); an output node may answer
`{"ui": {...}, "result": (...)}`. Hidden inputs PROMPT, EXTRA_PNGINFO and UNIQUE_ID are
passed as ComfyUI passes them. There is no torch, model or latent here.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
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
    loaded: list[str] = field(default_factory=list)

    def without(self, names: Iterable[str]) -> CustomNodes:
        """These node types less `names` (a pack never replaces a core node)."""
        drop = set(names)
        return CustomNodes(
            {k: v for k, v in self.object_info.items() if k not in drop},
            {k: v for k, v in self.functions.items() if k not in drop},
            list(self.failed),
            list(self.loaded),
        )


def pack_paths(root: Path) -> list[Path]:
    """The entries of one `custom_nodes` folder that ComfyUI tries to load, in name order."""
    if not root.is_dir():
        return []
    paths = []
    for path in sorted(root.iterdir()):
        if path.name == "__pycache__" or path.name.endswith(".disabled"):
            continue
        if path.is_file() and path.suffix != ".py":
            continue
        paths.append(path)
    return paths


def load_custom_nodes(paths: Iterable[str | Path]) -> CustomNodes:
    """Every pack under each of `paths` (folders of packs)."""
    found = CustomNodes()
    times: list[tuple[float, Path, bool]] = []
    for root in paths:
        for pack in pack_paths(Path(root)):
            started = time.perf_counter()
            ok = _load_pack(pack, found)
            times.append((time.perf_counter() - started, pack, ok))
            (found.loaded if ok else found.failed).append(str(pack))
    if times:
        log.info("Import times for custom nodes:")
        for seconds, pack, ok in sorted(times):
            log.info("%6.1f seconds%s: %s", seconds, "" if ok else " (IMPORT FAILED)", pack)
    return found


def _load_pack(pack: Path, found: CustomNodes) -> bool:
    try:
        module = _import(pack)
    except Exception:
        log.exception("Cannot import %s module for custom nodes", pack)
        return False
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is None:
        log.warning("Skip %s module for custom nodes: it has no NODE_CLASS_MAPPINGS", pack)
        return False
    names = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    module_name = pack.stem if pack.is_file() else pack.name
    for name, cls in dict(mappings).items():
        try:
            info = _info(module_name, str(name), cls, str(names.get(name, name)))
        except Exception:  # as ComfyUI: a node whose description fails is left out
            log.exception("[ERROR] describing the %r node failed; left out", name)
            continue
        found.object_info[str(name)] = info
        found.functions[str(name)] = _function(cls, info["input"].get("hidden") or {})
    return True


def _import(pack: Path) -> Any:
    if pack.is_file():
        module_name, source = str(pack.with_suffix("")), pack
    else:
        module_name, source = str(pack).replace(".", "_x_"), pack / "__init__.py"
    spec = importlib.util.spec_from_file_location(module_name, source)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module in {pack}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _info(module_name: str, name: str, cls: Any, display_name: str) -> dict[str, Any]:
    groups = {str(k): dict(v) for k, v in (cls.INPUT_TYPES() or {}).items()}
    outputs = list(getattr(cls, "RETURN_TYPES", ()) or ())
    info: dict[str, Any] = {
        "input": groups,
        "input_order": {k: list(v) for k, v in groups.items()},
        "output": outputs,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs) or outputs),
        "name": name,
        "display_name": display_name,
        "description": str(getattr(cls, "DESCRIPTION", "") or ""),
        "python_module": f"custom_nodes.{module_name}",
        "category": str(getattr(cls, "CATEGORY", "sd") or ""),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    return info


def _hidden_value(kind: Any, ctx: NodeContext) -> tuple[bool, Any]:
    """The value ComfyUI passes for a hidden input of this kind, where the stand-in has it."""
    if kind == "PROMPT":
        return True, ctx.prompt
    if kind == "EXTRA_PNGINFO":
        return True, ctx.extra_data.get("extra_pnginfo")
    if kind == "UNIQUE_ID":
        return True, ctx.node_id
    return False, None


def _function(cls: Any, hidden: dict[str, Any]) -> NodeFunction:
    def run(ctx: NodeContext, **inputs: Any) -> NodeResult:
        for name, kind in hidden.items():
            known, value = _hidden_value(kind, ctx)
            if known:
                inputs[name] = value
        answer = getattr(cls(), cls.FUNCTION)(**inputs)
        if isinstance(answer, dict):  # {"ui": ..., "result": (...)}, as output nodes answer
            return NodeResult(tuple(answer.get("result") or ()), answer.get("ui"))
        return NodeResult(tuple(answer or ()))

    return run
