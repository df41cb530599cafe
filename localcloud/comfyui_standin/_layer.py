"""The active layer file: which environment's packs this start of the stand-in loads.

The worker writes it (docs/ARCHITECTURE.md, environments): JSON
`{"environment_id": str|null, "custom_nodes": str|null, "site_packages": str|null}`; no file,
or nulls, is the base environment. As the image's ComfyUI start does, the layer's
site-packages goes on the import path ahead of the base's (PYTHONPATH: no `.pth` processing)
and its `custom_nodes` folder is one more folder of packs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path


class LayerFileError(Exception):
    """The layer file exists but does not hold the contract's JSON."""


@dataclass(frozen=True)
class Layer:
    """One environment's layer, or the base environment (all None)."""

    environment_id: str | None = None
    custom_nodes: str | None = None
    site_packages: str | None = None


_FIELDS = ("environment_id", "custom_nodes", "site_packages")


def read_layer(path: str | Path | None) -> Layer:
    """The layer the file names; the base environment when there is no path or no file."""
    if path is None:
        return Layer()
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        return Layer()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LayerFileError(f"layer file {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LayerFileError(f"layer file {path} is not a JSON object")
    values: dict[str, str | None] = {}
    for name in _FIELDS:
        value = data.get(name)
        if value is not None and not (isinstance(value, str) and value):
            raise LayerFileError(f"layer file {path}: {name} must be a non-empty string or null")
        values[name] = value
    return Layer(**values)


def activate(layer: Layer) -> list[str]:
    """Put the layer's site-packages first on the import path; its custom-node folders."""
    if layer.site_packages and layer.site_packages not in sys.path:
        sys.path.insert(0, layer.site_packages)
    return [layer.custom_nodes] if layer.custom_nodes else []
