"""Phase 2 of the bake rehearsal, after the job: the environment layers' rights in the booted
root. The sudoers drop-in lets the worker restart exactly comfyui.service and run commands as
the build user (its git/probe variables kept, never as root or ComfyUI's user); the folders the
worker writes (the active layer file's, the layers) are ComfyUI's to read only, and the build
user reaches `builds/` only; neither ComfyUI's user nor the build user has a home on disk;
ComfyUI's start, as ComfyUI's user with its unit's command line, gives the base command line
without a layer file and the layer's extra paths file and site-packages with one.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from tests.bake._as_user import as_user
from tests.bake._root import RehearsalFailed
from tests.bake.systemctl_standin import environment, parse_unit_text

LAYERS = "/var/lib/comfyburst-environments"
LAYER_FILE = "/run/comfyburst/comfyui-layer.json"
LAYER = f"{LAYERS}/cache/env-rehearsal"
RESTART = "/usr/bin/systemctl restart comfyui.service"
BUILD = "comfyburst-build"
# (user, what, command, must succeed)
RIGHTS: list[tuple[str, str, str, bool]] = [
    ("comfyburst", "sudo: restart comfyui", f"sudo -n -l {RESTART}", True),
    (
        "comfyburst",
        "sudo: stop comfyui",
        "sudo -n -l /usr/bin/systemctl stop comfyui.service",
        False,
    ),
    (
        "comfyburst",
        "sudo: restart the worker",
        "sudo -n -l /usr/bin/systemctl restart comfyburst-worker.service",
        False,
    ),
    ("comfyburst", "sudo: a shell as root", "sudo -n -l /bin/sh", False),
    ("comfyburst", "sudo: id as comfyui", "sudo -n -u comfyui -- id -un", False),
    ("comfyburst", "sudo: id as the build user", f"sudo -n -u {BUILD} -- id -un", True),
    (BUILD, "sudo: restart comfyui", f"sudo -n -l {RESTART}", False),
    (BUILD, "list the layers", f"ls {LAYERS}", False),
    (BUILD, "read the layers cache", f"ls {LAYERS}/cache", False),
    (BUILD, "write its builds folder", f"test -w {LAYERS}/builds", True),
    (BUILD, "read ComfyUI's input", "ls /opt/comfyui/input", False),
    ("comfyui", "enter the builds folder", f"ls {LAYERS}/builds", False),
    ("comfyui", "sudo: restart comfyui", f"sudo -n -l {RESTART}", False),
    ("comfyui", "write the layer file", f"touch {LAYER_FILE}", False),
    ("comfyui", "write the layers", f"touch {LAYERS}/cache/planted", False),
    ("comfyui", "plant a layer", f"mkdir {LAYERS}/env-planted", False),
]
FOLDERS = {
    "/run/comfyburst": ("comfyburst", "comfyui", 0o2750),
    "/run/comfyui": ("comfyui", "comfyui", 0o700),
    LAYERS: ("comfyburst", "comfyui", 0o2751),
    f"{LAYERS}/builds": (BUILD, BUILD, 0o700),
    f"{LAYERS}/cache": ("comfyburst", "comfyui", 0o2750),
}


def _ids(root: Path, name: str) -> dict[int, str]:
    return {
        int(line.split(":")[2]): line.split(":")[0]
        for line in (root / "etc" / name).read_text().splitlines()
    }


def _check(failures: list[str], ok: bool, what: str, detail: str = "") -> None:
    print(f"  layers: {what:<44} {'ok' if ok else 'WRONG ' + detail}", flush=True)
    if not ok:
        failures.append(f"{what} {detail}".strip())


def _start_print(root: Path) -> dict[str, Any]:
    """comfyui.service's command line with `--print`, as its user, with its environment."""
    unit = parse_unit_text((root / "etc/systemd/system/comfyui.service").read_text())
    argv = shlex.split(unit["ExecStart"][0])
    argv.insert(3, "--print")
    env = [f"{k}={v}" for k, v in environment(unit.get("Environment", [])).items()]
    chdir = ["sh", "-c", 'cd "$0" && exec "$@"', "/opt/comfyui"]
    done = as_user(root, "comfyui", *chdir, "env", *env, *argv)
    if done.returncode != 0:
        raise RehearsalFailed(f"comfyui_start.py --print failed: {done.stderr.strip()[-400:]}")
    return dict(json.loads(done.stdout))


def prove_layer_rights(root: Path) -> None:
    """Every check printed; RehearsalFailed naming the failed ones."""
    failures: list[str] = []
    users, groups = _ids(root, "passwd"), _ids(root, "group")
    for folder, (user, group, mode) in FOLDERS.items():
        st = (root / folder.lstrip("/")).stat()
        seen = (users.get(st.st_uid), groups.get(st.st_gid), st.st_mode & 0o7777)
        what = f"{folder} {user}:{group} {mode:o}"
        _check(failures, seen == (user, group, mode), what, f"{seen[:2]} {seen[2]:o}")
    for user, what, command, must in RIGHTS:
        done = as_user(root, user, *shlex.split(command))
        ok = done.returncode == 0
        if what == "sudo: id as the build user":
            ok = ok and done.stdout.strip() == BUILD
        _check(failures, ok == must, f"{user}: {what} {'allowed' if ok else 'refused'}")
    passed = as_user(
        root,
        "comfyburst",
        "env",
        "GIT_ALLOW_PROTOCOL=file",
        "PYTHONPATH=/opt/comfyui",
        "sudo",
        "-n",
        "-u",
        BUILD,
        "--",
        "sh",
        "-c",
        'echo "$(id -un) $GIT_ALLOW_PROTOCOL $PYTHONPATH $HOME"',
    )
    seen = passed.stdout.strip()
    _check(
        failures,
        seen == f"{BUILD} file /opt/comfyui /nonexistent",
        "build as its user keeps git/probe variables",
        repr(seen or passed.stderr.strip()[-200:]),
    )
    for user in ("comfyui", BUILD):
        home = next(
            row.split(":")[5]
            for row in (root / "etc" / "passwd").read_text().splitlines()
            if row.split(":")[0] == user
        )
        gone = home == "/nonexistent" and not (root / home.lstrip("/")).exists()
        _check(failures, gone, f"{user} has no home on disk", home)
    old = (root / "var/lib/comfyui").exists()
    _check(failures, not old, "no /var/lib/comfyui")
    base = _start_print(root)
    is_base = base["environment_id"] is None and base["pythonpath"] is None
    _check(failures, is_base, "start: base", str(base))
    # A layer as the worker lays it out (its umask), and the active layer file it writes.
    nodes, site = f"{LAYER}/custom_nodes", f"{LAYER}/venv/lib/python3/site-packages"
    body = {"environment_id": "env-rehearsal", "custom_nodes": nodes, "site_packages": site}
    script = (
        f"umask 0027 && mkdir -p {nodes}/rehearsal_pack {site} && "
        f"echo 'NODE_CLASS_MAPPINGS = {{}}' > {nodes}/rehearsal_pack/__init__.py && "
        f"printf '%s' {shlex.quote(json.dumps(body))} > {LAYER_FILE}.tmp && "
        f"chmod 0644 {LAYER_FILE}.tmp && mv {LAYER_FILE}.tmp {LAYER_FILE}"
    )
    made = as_user(root, "comfyburst", "sh", "-c", script)
    _check(failures, made.returncode == 0, "worker lays out a layer", made.stderr.strip()[-200:])
    try:
        layered = _start_print(root)
        argv = list(layered["argv"])
        ok = argv[-2] == "--extra-model-paths-config" and layered["pythonpath"] == site
        _check(failures, ok, "start: the layer's paths file and site-packages", str(layered))
        yaml = as_user(root, "comfyui", "cat", argv[-1]).stdout
        _check(failures, f'custom_nodes: "{nodes}"' in yaml, "start: YAML names custom_nodes", yaml)
        read = as_user(root, "comfyui", "cat", f"{nodes}/rehearsal_pack/__init__.py")
        _check(failures, read.returncode == 0, "comfyui reads the layer's pack")
        wrote = as_user(root, "comfyui", "touch", f"{nodes}/rehearsal_pack/planted.py")
        _check(failures, wrote.returncode != 0, "comfyui cannot write the layer's pack")
    finally:
        as_user(root, "comfyburst", "rm", "-rf", LAYER, LAYER_FILE)
    if failures:
        raise RehearsalFailed(f"layer rights: {failures}")
