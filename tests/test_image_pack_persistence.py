"""On the image, pack code (ComfyUI's user) cannot schedule a crontab or at job,
which would run outside comfyui.service and so outlive the restart that gives another caller a
fresh ComfyUI. Debian's crontab(1): "For standard Debian systems, all users may use this
command" unless /etc/cron.allow or /etc/cron.deny exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bake import systemctl_standin as sc
from tests.bake._root import REPO, RehearsalFailed
from tests.bake.rehearsal import check_no_user_schedules


def _root(tmp_path: Path, cron: str | None, at: str | None) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    for name, text in (("cron.allow", cron), ("at.allow", at)):
        if text is not None:
            (etc / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_rehearsal_passes_a_root_where_only_root_schedules(tmp_path: Path) -> None:
    check_no_user_schedules(_root(tmp_path, "root\n", "root\n"))


@pytest.mark.parametrize(
    ("cron", "at"), [(None, "root\n"), ("root\n", None), ("root\ncomfyui\n", "root\n")]
)
def test_the_rehearsal_fails_a_root_where_another_user_may_schedule(
    tmp_path: Path, cron: str | None, at: str | None
) -> None:
    with pytest.raises(RehearsalFailed, match=r"allow must list root only"):
        check_no_user_schedules(_root(tmp_path, cron, at))


def test_the_image_writes_the_allow_files_the_rehearsal_checks() -> None:
    script = (REPO / "gpu_image" / "scripts" / "05-systemd.sh").read_text(encoding="utf-8")
    assert "for allow in /etc/cron.allow /etc/at.allow; do" in script
    assert "printf 'root\\n' >\"${allow}\"" in script


def test_comfyui_gets_a_fresh_tmp_at_each_start() -> None:
    unit = sc.load_unit("comfyui.service", REPO / "gpu_image" / "systemd")
    assert unit["PrivateTmp"] == ["yes"]
