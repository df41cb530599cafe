"""The bake rehearsal's systemctl reads the image's real unit files as systemd would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bake import systemctl_standin as sc

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
    assert env["EXTRA"] == "1" and env["HOME"] == "/var/lib/comfyui"
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
