"""What the image gives pack code (gpu_image/systemd, gpu_image/scripts): builds run as their own
user, in no service group and off the metadata server; ComfyUI's home and IPC objects go with
each stop of comfyui.service. The bake rehearsal checks the same in a baked root (tests/bake)."""

from __future__ import annotations

import re
import shlex

from tests._image_units import SCRIPTS, SYSTEMD
from tests._image_units import common as _common
from tests._image_units import unit as _unit
from tests.bake.systemctl_standin import environment


def _useradd(user_var: str) -> list[str]:
    """The words of the useradd line (joined over `\\`) that makes the user `${user_var}`."""
    text = (SCRIPTS / "02-comfyui.sh").read_text().replace("\\\n", " ")
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("useradd")]
    (line,) = [ln for ln in lines if ln.rstrip().endswith(f'"${{{user_var}}}"')]
    return shlex.split(line)


def test_comfyui_has_a_home_and_ipc_that_go_with_each_stop() -> None:
    unit = _unit("comfyui.service")
    assert unit["User"] == ["comfyui"] and unit["PrivateTmp"] == ["yes"]
    # The home is in the unit's private /var/tmp (removed when it stops), not in /run (RAM).
    home = environment(unit["Environment"])["HOME"]
    assert home.startswith("/var/tmp/") and home.count("/") == 3
    assert unit["RemoveIPC"] == ["yes"]
    assert "RuntimeDirectoryPreserve" not in unit


def test_no_other_unit_runs_as_comfyui() -> None:
    """RemoveIPC= acts when the last unit running as the user stops: comfyui.service only."""
    users = {p.name: _unit(p.name).get("User", ["root"])[-1] for p in SYSTEMD.glob("*.service")}
    assert [name for name, user in users.items() if user == "comfyui"] == ["comfyui.service"]
    assert _common("BUILD_USER") not in users.values()


def test_comfyui_and_the_build_user_have_no_home_on_disk() -> None:
    for var in ("COMFYUI_USER", "BUILD_USER"):
        words = _useradd(var)
        assert "--no-create-home" in words and "--create-home" not in words, var
        assert words[words.index("--home-dir") + 1] == "${NO_HOME}", var
        assert words[words.index("--shell") + 1] == "/usr/sbin/nologin", var
    assert _common("NO_HOME") == "/nonexistent"


def test_the_build_user_is_in_no_service_group() -> None:
    words = _useradd("BUILD_USER")
    assert "--user-group" in words and "--groups" not in words and "--gid" not in words
    scripts = "\n".join(p.read_text() for p in SCRIPTS.glob("*.sh"))
    assert not re.search(r"usermod[^\n]*BUILD_USER", scripts)
    assert _common("BUILD_USER") not in {_common("COMFYUI_USER"), _common("WORKER_USER")}


def test_the_metadata_guard_rejects_comfyui_and_the_build_user() -> None:
    rules = (SYSTEMD / "metadata-guard.nft").read_text()
    for user in ("comfyui", _common("BUILD_USER")):
        assert f'meta skuid "{user}" ip daddr 169.254.169.254 counter reject' in rules
        assert f'meta skuid "{user}" ip6 daddr fd20:ce::254 counter reject' in rules


def test_the_worker_may_run_commands_as_the_build_user_never_as_comfyui() -> None:
    text = (SYSTEMD / "comfyburst-environments.sudoers").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    build = _common("BUILD_USER")
    assert f"comfyburst ALL=({build}) NOPASSWD: ALL" in lines
    assert not [ln for ln in lines if "(comfyui)" in ln or "Defaults>comfyui " in ln]
    (keep,) = [ln for ln in lines if ln.startswith(f"Defaults>{build} env_keep")]
    assert "GIT_ALLOW_PROTOCOL" in keep and "PYTHONPATH" in keep


def test_the_build_user_reaches_builds_only() -> None:
    """The layers folder may be crossed by others (to builds/), listed and read by ComfyUI's
    group; its cache stays closed to others; builds/ is the build user's alone."""
    text = (SCRIPTS / "04-worker.sh").read_text()
    owned = '-o "${WORKER_USER}" -g "${COMFYUI_USER}"'
    assert f'install -d {owned} -m 2751 "${{ENV_LAYERS_DIR}}"' in text
    assert f'install -d {owned} -m 2750 "${{ENV_LAYERS_DIR}}/cache"' in text
    builds = '-o "${BUILD_USER}" -g "${BUILD_USER}" -m 0700 "${ENV_LAYERS_DIR}/builds"'
    assert f"install -d {builds}" in text
    assert 'chmod g-s "${ENV_LAYERS_DIR}/builds"' in text  # exactly 0700, no inherited setgid
