"""The bake rehearsal's systemctl reads the image's real unit files as systemd would."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bake import systemctl_standin as sc
from tests.bake._root import REPO, RehearsalFailed
from tests.bake.rehearsal import check_no_periodic_apt

SYSTEMD = Path(__file__).resolve().parent.parent / "gpu_image" / "systemd"


@pytest.fixture
def unit_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for unit in SYSTEMD.glob("*.service"):
        shutil.copy2(unit, tmp_path / unit.name)
    monkeypatch.setattr(sc, "UNIT_DIR", tmp_path)
    monkeypatch.setattr(sc, "WANTS", tmp_path / "multi-user.target.wants")
    return tmp_path


def test_environment_words_are_split_like_systemd() -> None:
    env = sc.environment(['A=1 "B=two words"', "C=x=y"])
    assert env == {"A": "1", "B": "two words", "C": "x=y"}
    with pytest.raises(sc.UnitError):
        sc.environment(["NOEQUALS"])


def test_worker_unit_runs_as_its_user_with_comfyui_group(unit_dir: Path) -> None:
    unit = sc.load_unit("comfyburst-worker.service", unit_dir)
    assert unit["User"] == ["comfyburst"] and unit["SupplementaryGroups"] == ["comfyui"]
    env = sc.environment(unit["Environment"])
    assert env["COMFYBURST_WORKER_POWEROFF_COMMAND"] == "sudo -n /usr/bin/systemctl poweroff"
    assert sc.load_unit("comfyui.service", unit_dir)["User"] == ["comfyui"]


def test_drop_ins_add_environment_and_replace_scalars(unit_dir: Path) -> None:
    (unit_dir / "comfyui.service.d").mkdir()
    (unit_dir / "comfyui.service.d" / "x.conf").write_text(
        '[Service]\nEnvironment="EXTRA=1"\nUMask=0077\n'
    )
    unit = sc.load_unit("comfyui.service", unit_dir)
    env = sc.environment(unit["Environment"])
    assert env["EXTRA"] == "1" and env["HOME"] == "/var/tmp/comfyui-home"
    assert unit["UMask"] == ["0077"]


def test_enabled_units_start_guard_then_comfyui_then_worker(unit_dir: Path) -> None:
    sc.enable(["comfyburst-worker.service", "comfyui.service", "comfyburst-metadata-guard.service"])
    assert sc.enabled_units() == [
        "comfyburst-metadata-guard.service",
        "comfyui.service",
        "comfyburst-worker.service",
    ]


def test_a_missing_unit_is_an_error(unit_dir: Path) -> None:
    with pytest.raises(sc.UnitError, match="not found"):
        sc.load_unit("nope.service", unit_dir)
    assert sc.main(["start", "nope.service"]) == 5


# --- 01-driver-check.sh: the base image's driver, checked and held ------------------------------

SCRIPTS = SYSTEMD.parent / "scripts"
NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *--list-gpus*) echo "GPU 0: NVIDIA L4 (UUID: GPU-1)" ;;
  *noheader*) echo "570.172.08" ;;
  *) echo "name, driver_version, memory.total [MiB]"; echo "NVIDIA L4, 570.172.08, 23034 MiB" ;;
esac
"""
DPKG_QUERY = """#!/bin/sh
printf '%s\\n' 'ii  nvidia-driver-570' 'ii  libnvidia-compute-570' 'rc  nvidia-driver-550' \
  'ii  nvidia-utils-570-server' 'ii  nvidia-container-toolkit-base' 'ii  python3' \
  'ii  libcudnn9-cuda-12' 'ii  cuda-drivers-570'
"""
# apt-mark: `hold` records its packages; `showhold` prints them.
APT_MARK = """#!/bin/sh
held="$(dirname "$0")/held"
if [ "$1" = hold ]; then shift; printf '%s\\n' "$@" >>"$held"; else cat "$held" 2>/dev/null; fi
"""


def _driver_check(tmp_path: Path, module_line: str) -> tuple[int, str, list[str]]:
    """01-driver-check.sh as Packer runs it, with nvidia-smi, dpkg-query and apt-mark stand-ins."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("nvidia-smi", NVIDIA_SMI),
        ("dpkg-query", DPKG_QUERY),
        ("apt-mark", APT_MARK),
    ):
        (bin_dir / name).write_text(text, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    src = tmp_path / "src"
    shutil.copytree(SCRIPTS, src / "scripts")
    version = tmp_path / "version"
    version.write_text(module_line, encoding="utf-8")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", str(src / "scripts" / "01-driver-check.sh")],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "COMFYBURST_SRC": str(src),
            "NVIDIA_MODULE_VERSION_FILE": str(version),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    held = bin_dir / "held"
    lines = held.read_text(encoding="utf-8").split() if held.exists() else []
    return result.returncode, result.stdout + result.stderr, lines


MODULE = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08  Tue Jul  8 2025\n"


def test_the_driver_check_holds_the_installed_driver_packages(tmp_path: Path) -> None:
    code, out, held = _driver_check(tmp_path, MODULE)
    assert code == 0, out
    # Installed driver packages only: not a removed one, not CUDA's libraries, not the toolkit's.
    assert held == [
        "nvidia-driver-570",
        "libnvidia-compute-570",
        "nvidia-utils-570-server",
        "cuda-drivers-570",
    ]
    assert "driver check passed: 1 GPU(s), driver 570.172.08" in out


def test_the_driver_check_fails_when_the_module_is_not_the_driver_s(tmp_path: Path) -> None:
    code, out, held = _driver_check(tmp_path, MODULE.replace("570.172.08", "570.86.15"))
    assert code == 1
    assert "kernel module 570.86.15 is not the driver's 570.172.08" in out
    assert held == []


def test_the_image_asks_the_base_image_for_its_driver() -> None:
    image = (SYSTEMD.parent / "image.pkr.hcl").read_text(encoding="utf-8")
    assert re.search(r'install-nvidia-driver\s*=\s*"True"', image)
    assert '"${path.root}/scripts/01-driver-check.sh",' in image


# --- The rehearsal's check that periodic apt is off in the image -------------------------------


def _masked_root(root: Path, skip: str = "") -> Path:
    """What 05-systemd.sh leaves: each periodic apt unit linked to /dev/null, apt's periodic off."""
    common = (REPO / "gpu_image" / "scripts" / "common.sh").read_text(encoding="utf-8")
    units = re.search(r"APT_PERIODIC_UNITS=\(([^)]*)\)", common).group(1).split()
    system = root / "etc" / "systemd" / "system"
    system.mkdir(parents=True)
    for unit in units:
        if unit != skip:
            (system / unit).symlink_to("/dev/null")
    conf = root / "etc" / "apt" / "apt.conf.d" / "99comfyburst-no-periodic"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        'APT::Periodic::Update-Package-Lists "0";\nAPT::Periodic::Unattended-Upgrade "0";\n',
        encoding="utf-8",
    )
    return root


def test_the_rehearsal_passes_a_root_with_periodic_apt_masked(tmp_path: Path) -> None:
    check_no_periodic_apt(_masked_root(tmp_path))


def test_the_rehearsal_fails_a_root_whose_apt_timer_still_runs(tmp_path: Path) -> None:
    with pytest.raises(RehearsalFailed, match=r"apt-daily-upgrade\.timer is not masked"):
        check_no_periodic_apt(_masked_root(tmp_path, skip="apt-daily-upgrade.timer"))


def test_the_image_masks_the_units_the_rehearsal_checks() -> None:
    systemd_script = (SCRIPTS / "05-systemd.sh").read_text(encoding="utf-8")
    assert 'ln -sfn /dev/null "/etc/systemd/system/${unit}"' in systemd_script
    assert 'for unit in "${APT_PERIODIC_UNITS[@]}"' in systemd_script
