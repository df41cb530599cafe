"""The stand-in's three file areas (input, output, temp) and safe name resolution inside them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FOLDER_TYPES = ("input", "output", "temp")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class UnsafePathError(ValueError):
    """A name or subfolder would leave its area (`..`, absolute path)."""


@dataclass(frozen=True)
class Dirs:
    """Absolute input, output and temp directories."""

    input: Path
    output: Path
    temp: Path

    @classmethod
    def create(cls, input_dir: str | Path, output_dir: str | Path, temp_dir: str | Path) -> Dirs:
        """Resolve and create the three directories."""
        dirs = cls(Path(input_dir).resolve(), Path(output_dir).resolve(), Path(temp_dir).resolve())
        for path in (dirs.input, dirs.output, dirs.temp):
            path.mkdir(parents=True, exist_ok=True)
        return dirs

    def area(self, folder_type: str) -> Path:
        """The directory of `input`, `output` or `temp`; unknown types raise KeyError."""
        return {"input": self.input, "output": self.output, "temp": self.temp}[folder_type]


def inside(base: Path, *parts: str) -> Path:
    """`base/parts…` resolved, or UnsafePathError when the result is not under `base`."""
    for part in parts:
        if os.path.isabs(part):
            raise UnsafePathError(part)
    target = base.joinpath(*parts).resolve()
    if os.path.commonpath([base, target]) != str(base):
        raise UnsafePathError(str(target))
    return target


def split_annotated(name: str, default_type: str = "input") -> tuple[str, str]:
    """`"x.png [temp]"` → `("x.png", "temp")`; names without a known annotation keep the default."""
    for folder_type in FOLDER_TYPES:
        suffix = f" [{folder_type}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], folder_type
    return name, default_type


def resolve_annotated(dirs: Dirs, name: str) -> Path:
    """The file a LoadImage value names: `sub/name`, or `name [temp|output|input]`."""
    plain, folder_type = split_annotated(name)
    return inside(dirs.area(folder_type), plain)


def list_images(base: Path) -> list[str]:
    """Image files under `base`, as sorted POSIX paths relative to it."""
    found = [
        path.relative_to(base).as_posix()
        for path in base.rglob("*")
        if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES
    ]
    return sorted(found)


def loadable_names(dirs: Dirs) -> list[str]:
    """Every value LoadImage accepts: input files (with subfolders) and annotated temp/output."""
    names = list_images(dirs.input)
    names += [f"{name} [input]" for name in names]
    names += [f"{name} [temp]" for name in list_images(dirs.temp)]
    names += [f"{name} [output]" for name in list_images(dirs.output)]
    return names


def top_level_inputs(dirs: Dirs) -> list[str]:
    """The input files LoadImage's object_info lists: top level only, like the real server."""
    return sorted(name for name in list_images(dirs.input) if "/" not in name)
