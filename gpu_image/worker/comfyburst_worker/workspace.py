"""ComfyUI's input, output and temp folders hold one job's files at a time.

They are emptied when the agent starts (whatever a crashed run left) and after every job,
however it ended, before the next claim. Entries are removed without following symlinks,
so nothing outside the folders is touched, and a job's inputs are written without following
one (`place_input`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from comfyburst_worker.errors import InputError

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


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def place_input(root: Path, subfolder: str, name: str, data: bytes) -> None:
    """Write `root/subfolder/name`, following no link below `root` (InputError if it cannot).

    ComfyUI's user owns the input folder, and pack code may have left a link there, or (a
    private environment's, between its owner's jobs) still run and swap a folder for one while
    the worker writes: followed, the worker would write the caller's bytes where only the
    worker may (its home, the environment layers). Each folder is opened relative to the one
    above, never by path; a file or link in the place of a folder or of the input is removed
    (unlink never follows one), so what a previous job's pack code left fails no later job."""
    fd = os.open(root, _DIR)
    try:
        for part in subfolder.split("/"):
            below = _own_folder(fd, part)
            os.close(fd)
            fd = below
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        out = os.open(name, flags, 0o666, dir_fd=fd)
    except OSError as exc:
        raise InputError(f"input {name} could not be placed: {exc.strerror}") from None
    finally:
        os.close(fd)
    with os.fdopen(out, "wb") as stream:
        stream.write(data)


def _own_folder(fd: int, part: str) -> int:
    """The folder `part` of the open folder `fd`, made if absent, opened without a link."""
    try:
        os.mkdir(part, dir_fd=fd)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
            os.unlink(part, dir_fd=fd)
            os.mkdir(part, dir_fd=fd)
    return os.open(part, _DIR, dir_fd=fd)
