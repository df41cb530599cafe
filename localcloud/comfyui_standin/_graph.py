"""Prompt graph helpers: links, execution order and cache signatures."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any


def is_link(value: Any) -> bool:
    """True for an input value of the form `[node_id, output_index]`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def execution_order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
    """The nodes the outputs need, dependencies first (depth-first, in input order)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen or node_id not in prompt:
            return
        seen.add(node_id)
        for value in prompt[node_id].get("inputs", {}).values():
            if is_link(value):
                visit(value[0])
        order.append(node_id)

    for output in outputs:
        visit(output)
    return order


def signatures(prompt: dict[str, Any], volatile: Callable[[str], Any]) -> dict[str, str]:
    """A content hash per node: class, literal inputs, upstream hashes and `volatile(node_id)`.

    Nodes in a cycle or linked to a missing node get no signature (they are never cached).
    """
    done: dict[str, str | None] = {}

    def sign(node_id: str, path: frozenset[str]) -> str | None:
        if node_id in done:
            return done[node_id]
        if node_id in path or not isinstance(prompt.get(node_id), dict):
            return None
        node = prompt[node_id]
        parts: dict[str, Any] = {}
        for name, value in sorted(node.get("inputs", {}).items()):
            if is_link(value):
                upstream = sign(value[0], path | {node_id})
                if upstream is None:
                    done[node_id] = None
                    return None
                parts[name] = ["link", upstream, value[1]]
            else:
                parts[name] = value
        blob = json.dumps([node.get("class_type"), parts, volatile(node_id)], sort_keys=True)
        done[node_id] = hashlib.sha256(blob.encode()).hexdigest()
        return done[node_id]

    result = {}
    for node_id in prompt:
        sig = sign(node_id, frozenset())
        if sig is not None:
            result[node_id] = sig
    return result


def coerce_numbers(prompt: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """A copy with numeric strings on INT/FLOAT inputs converted, as the real server stores it."""
    coerced: dict[str, Any] = {}
    for node_id, node in prompt.items():
        spec = object_info.get(node.get("class_type"), {}).get("input", {})
        kinds = {
            name: config[0]
            for section in ("required", "optional")
            for name, config in spec.get(section, {}).items()
        }
        inputs = dict(node.get("inputs") or {})
        for name, value in inputs.items():
            kind = kinds.get(name)
            if isinstance(value, str) and kind in ("INT", "FLOAT"):
                with contextlib.suppress(ValueError):
                    inputs[name] = int(value) if kind == "INT" else float(value)
        coerced[node_id] = {**node, "inputs": inputs}
    return coerced
