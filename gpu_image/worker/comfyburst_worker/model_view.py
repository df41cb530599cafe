"""A job's models under the names it asked for: one folder ComfyUI searches first.

ComfyUI's `extra_model_paths.yaml` points at this folder (`{kind}/` each, `is_default: true`,
so it is searched before ComfyUI's own models folder, where the pre-baked models live). While
a job runs it holds exactly that job's models, as read-only symlinks into the content-addressed
store; it is emptied when the job ends. So a job's file shadows a pre-baked file of the same
name for that job only, and two jobs that bring the same name with different bytes each see
their own.

ComfyUI keeps loaded models and node outputs across prompts, keyed by the inputs (the file
name, not its bytes). `changed_names` tells the agent when the names it shows now lead to
other bytes than they did for the job before, so it can have ComfyUI drop those caches.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from comfyburst.schema import ModelKind

PREBAKED = "prebaked"  # what a name leads to when the view has no file of that name
_KINDS = tuple(kind.value for kind in ModelKind)


class JobModelView:
    """The view folder; one per agent (jobs on a VM run one after the other)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._shown: dict[str, str] = {}  # what the last job's view showed: key -> sha256
        self.clear()

    def show(self, blobs: dict[str, Path]) -> set[str]:
        """Show exactly `blobs` ({kind}/{filename} -> store file); returns the names whose
        bytes differ from what the previous job saw under them."""
        self.clear()
        shown: dict[str, str] = {}
        for key, blob in sorted(blobs.items()):
            link = self.root / key
            if os.path.commonpath([self.root, os.path.normpath(link)]) != str(self.root):
                raise ValueError(f"model name {key!r} leaves the view")
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(blob, link)
            shown[key] = blob.name
        changed = changed_names(self._shown, shown)
        self._shown = shown
        return changed

    def clear(self) -> None:
        """Empty the view, keeping one folder per model kind (ComfyUI lists them)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                if entry.name in _KINDS and not any(entry.iterdir()):
                    continue  # already as it should be: no removal and re-creation per job
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for kind in _KINDS:
            (self.root / kind).mkdir(exist_ok=True)


def changed_names(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Names that led to other bytes before (a missing name leads to the pre-baked file)."""
    return {
        key
        for key in before.keys() | after.keys()
        if before.get(key, PREBAKED) != after.get(key, PREBAKED)
    }
