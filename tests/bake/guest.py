"""What a rehearsal VM boots: the baked Debian root's enabled units, through its systemctl.

Run by the Compute stand-in (as `python -m tests.bake.guest --root ROOT`) inside the
rehearsal's network namespace. Like a VM's network, it makes the VM's metadata server (at
GCE_METADATA_HOST) answer at 169.254.169.254:80, which the root's /etc/hosts names
metadata.google.internal; it points the worker unit at the local cloud's emulators with a
drop-in, then boots. The guest ends when the root powers off (or a unit fails).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from tests.bake._forward import Forwarder

DROP_IN = "etc/systemd/system/comfyburst-worker.service.d/rehearsal.conf"
_PASSED = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bake.guest")
    parser.add_argument("--root", required=True, type=Path)
    args = parser.parse_args(argv)
    forwarder = Forwarder(os.environ["GCE_METADATA_HOST"])
    drop_in = args.root / DROP_IN
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'Environment="{k}={os.environ[k]}"' for k in _PASSED if k in os.environ]
    drop_in.write_text(
        "# The local cloud's emulators (bake rehearsal)\n[Service]\n" + "\n".join(lines) + "\n"
    )
    try:
        return subprocess.run(
            ["chroot", str(args.root), "/usr/bin/systemctl", "boot"], check=False
        ).returncode
    finally:
        forwarder.close()


if __name__ == "__main__":
    sys.exit(main())
