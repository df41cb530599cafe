"""The chaos run's VM image: the local VM guest, with the run's ComfyUI stand-in faults on
every VM's disk before it starts.

On a pool of templates the VMs are created during the run under names the dispatcher derives,
so the faults cannot be written onto their disks beforehand; each guest writes them itself,
from `LOCALCLOUD_CHAOS_STANDIN_FAULTS` (JSON), then runs `localcloud.vm_guest` unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from localcloud import vm_guest

ENV_VAR = "LOCALCLOUD_CHAOS_STANDIN_FAULTS"


def main() -> int:
    faults = os.environ.get(ENV_VAR)
    if faults:
        root = Path(os.environ.get("LOCALCLOUD_VM_DISK_ROOT", ".localcloud/disks"))
        disk = root / vm_guest._instance_name()
        disk.mkdir(parents=True, exist_ok=True)
        (disk / vm_guest.FAULTS_FILE).write_text(faults)
    return vm_guest.main([])


if __name__ == "__main__":
    sys.exit(main())
