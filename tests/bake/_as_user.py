"""Running a command in the rehearsal's root as one of the image's users, as a unit would."""

from __future__ import annotations

import subprocess
from pathlib import Path


def as_user(root: Path, user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    """`cmd` in the root as `user` (its groups, a clean environment), as a unit would run it."""
    argv = [
        "chroot",
        str(root),
        "setpriv",
        f"--reuid={user}",
        f"--regid={user}",
        "--init-groups",
        "--reset-env",
        "--",
        *cmd,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
