"""What comes back from a remote job, sorted by the ComfyUI type it becomes: images as IMAGE,
video and audio as ComfyUI's VIDEO/AUDIO where this ComfyUI has them, anything else a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .tensors import is_image_name

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
Kind = Literal["image", "video", "audio", "file"]
# ComfyUI's core nodes that save or show IMAGE outputs (the "Queue on GPU" wrapper then saves
# the images that come back with SaveImage).
IMAGE_OUTPUT_NODES = frozenset({"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG"})


def kind_of(name: str) -> Kind:
    lowered = name.lower()
    if is_image_name(lowered):
        return "image"
    if lowered.endswith(VIDEO_SUFFIXES):
        return "video"
    if lowered.endswith(AUDIO_SUFFIXES):
        return "audio"
    return "file"


@dataclass
class SavedOutputs:
    """The files of a job saved to ComfyUI's output folder, by kind (paths as saved)."""

    by_kind: dict[Kind, list[Path]] = field(default_factory=dict)

    def add(self, path: Path) -> None:
        self.by_kind.setdefault(kind_of(path.name), []).append(path)

    def first(self, kind: Kind) -> Path | None:
        paths = self.by_kind.get(kind) or []
        return paths[0] if paths else None

    def all_paths(self) -> list[Path]:
        return [path for paths in self.by_kind.values() for path in paths]


def save_files(target: Path, files: list[tuple[str, bytes]]) -> SavedOutputs:
    """Write each (relative name, bytes) under `target` (names were checked by the caller)."""
    saved = SavedOutputs()
    for name, data in files:
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        saved.add(path)
    return saved


def makes_images(workflow: dict[str, Any]) -> bool:
    """Whether a workflow has an output node that yields images."""
    return any(
        isinstance(node, dict) and node.get("class_type") in IMAGE_OUTPUT_NODES
        for node in workflow.values()
    )
