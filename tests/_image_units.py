"""The image's units and script settings as tests read them (gpu_image/systemd,
gpu_image/scripts/common.sh): one reader for every test of the image's wiring."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.bake.systemctl_standin import parse_unit_text

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "gpu_image" / "systemd"
SCRIPTS = REPO / "gpu_image" / "scripts"


def unit(name: str) -> dict[str, list[str]]:
    """A unit file of gpu_image/systemd, parsed as systemd reads it."""
    return parse_unit_text((SYSTEMD / name).read_text())


def unit_env(name: str) -> dict[str, str]:
    """The unit's `Environment=` settings."""
    return dict(w.split("=", 1) for v in unit(name)["Environment"] for w in shlex.split(v))


def common(name: str) -> str:
    """A `readonly NAME=value` of gpu_image/scripts/common.sh."""
    found = re.search(rf"^readonly {name}=(\S+)$", (SCRIPTS / "common.sh").read_text(), re.M)
    assert found is not None, name
    return found.group(1)
