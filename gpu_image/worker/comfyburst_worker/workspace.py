"""ComfyUI's input, output and temp folders hold one job's files at a time.

They are emptied when the agent starts (whatever a crashed run left) and after every job,
however it ended, before the next claim. Entries are removed without following symlinks,
so nothing outside the folders is touched.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComfyFolders:
    input: Path
    output: Path
    temp: Path

    def empty(self) -> int:
        """Remove everything inside the three folders; returns how many entries went."""
        return sum(empty_folder(path) for path in (self.input, self.output, self.temp))


def empty_folder(path: Path) -> int:
    """Remove every entry of `path` (the folder stays; a missing one is created)."""
    path.mkdir(parents=True, exist_ok=True)
    removed = 0
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed
