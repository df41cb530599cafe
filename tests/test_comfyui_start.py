"""ComfyUI's start on the image (gpu_image/systemd/comfyui_start.py): the base command line
without an active layer, the layer's custom_nodes (extra paths YAML) and site-packages
(PYTHONPATH) with one, a refused start for a layer file the worker never writes; and the
image's wiring of the layer file, the layers folder and the restart right between the units."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests._image_units import SCRIPTS, SYSTEMD
from tests._image_units import common as _common
from tests._image_units import unit as _unit
from tests._image_units import unit_env as _env

START = SYSTEMD / "comfyui_start.py"
BASE_ARGS = ["--listen", "127.0.0.1", "--port", "8188"]


def _start(
    tmp_path: Path, *args: str, main: str = "main.py", extra: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "COMFYBURST_COMFYUI_LAYER_FILE": str(tmp_path / "run" / "comfyui-layer.json"),
        "COMFYBURST_COMFYUI_LAYER_PATHS": str(tmp_path / "layer-paths.yaml"),
        "PYTHONPATH": "/somewhere/stale",
        "HOME": str(tmp_path / "home"),  # the unit's, in its private /var/tmp
    }
    argv = [sys.executable, "-I", str(START), *args, main, *BASE_ARGS, *(extra or [])]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def _layer(tmp_path: Path, body: object) -> dict[str, Path]:
    root = tmp_path / "layers" / "cache" / "env-1"
    nodes, site = root / "custom_nodes", root / "venv" / "lib" / "python3.12" / "site-packages"
    nodes.mkdir(parents=True)
    site.mkdir(parents=True)
    (tmp_path / "run").mkdir(exist_ok=True)
    text = body if isinstance(body, str) else json.dumps(body)
    (tmp_path / "run" / "comfyui-layer.json").write_text(text)
    return {"custom_nodes": nodes, "site_packages": site}


def test_no_layer_file_starts_the_base_command_line(tmp_path: Path) -> None:
    (tmp_path / "layer-paths.yaml").write_text("stale: {}\n")  # a previous start's
    done = _start(tmp_path, "--print")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown == {
        "environment_id": None,
        "argv": [sys.executable, "main.py", *BASE_ARGS],
        "pythonpath": None,
    }
    assert not (tmp_path / "layer-paths.yaml").exists()


@pytest.mark.parametrize("body", ["null", "", {"environment_id": None, "custom_nodes": None}])
def test_a_base_layer_file_starts_the_base(tmp_path: Path, body: object) -> None:
    (tmp_path / "run").mkdir()
    text = body if isinstance(body, str) else json.dumps(body)
    (tmp_path / "run" / "comfyui-layer.json").write_text(text)
    done = _start(tmp_path, "--print")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["argv"] == [sys.executable, "main.py", *BASE_ARGS]


def test_a_layer_adds_its_custom_nodes_and_site_packages(tmp_path: Path) -> None:
    folders = _layer(tmp_path, {})
    body = {"environment_id": "env-1", **{k: str(v) for k, v in folders.items()}}
    (tmp_path / "run" / "comfyui-layer.json").write_text(json.dumps(body))
    done = _start(tmp_path, "--print")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    paths = tmp_path / "layer-paths.yaml"
    assert shown["environment_id"] == "env-1"
    assert shown["argv"] == [
        sys.executable,
        "main.py",
        *BASE_ARGS,
        "--extra-model-paths-config",
        str(paths),
    ]
    # The stale PYTHONPATH of the unit's environment is replaced, not extended.
    assert shown["pythonpath"] == str(folders["site_packages"])
    # What ComfyUI's extra paths loader reads: one section, its custom_nodes the layer's folder.
    sections = yaml.safe_load(paths.read_text())
    assert list(sections.values()) == [{"custom_nodes": str(folders["custom_nodes"])}]


def test_the_start_replaces_itself_with_comfyui(tmp_path: Path) -> None:
    folders = _layer(tmp_path, {})
    body = {"environment_id": "env-1", **{k: str(v) for k, v in folders.items()}}
    (tmp_path / "run" / "comfyui-layer.json").write_text(json.dumps(body))
    main = tmp_path / "main.py"
    main.write_text(
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'pid': os.getpid(), "
        "'path': os.environ.get('PYTHONPATH'), 'site': sys.path}))\n"
    )
    done = _start(tmp_path, main=str(main))
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout)
    assert ran["argv"] == [
        *BASE_ARGS,
        "--extra-model-paths-config",
        str(tmp_path / "layer-paths.yaml"),
    ]
    assert ran["path"] == str(folders["site_packages"])
    assert str(folders["site_packages"]) in ran["site"]  # importable by the packs
    assert "comfyui-start: environment env-1" in done.stderr
    # ComfyUI's home is made at each start, closed to others (systemd removes it at each stop).
    assert (tmp_path / "home").stat().st_mode & 0o7777 == 0o700


def test_a_home_that_is_not_a_folder_of_comfyuis_stops_the_start(tmp_path: Path) -> None:
    """A link where the home goes (planted in a shared /var/tmp) is never followed."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "elsewhere")
    done = _start(tmp_path, main=str(tmp_path / "main.py"))
    assert done.returncode == 2
    assert "is not a folder of this user's" in done.stderr


def test_the_start_makes_the_user_directory_the_unit_names_closed_to_others(
    tmp_path: Path,
) -> None:
    """ComfyUI refuses a --user-directory that does not exist; the unit's lies in the home that
    each stop removes, so the start makes it, each time."""
    main = tmp_path / "main.py"
    main.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    user_dir = tmp_path / "home" / "user"
    done = _start(tmp_path, main=str(main), extra=["--user-directory", str(user_dir)])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [*BASE_ARGS, "--user-directory", str(user_dir)]
    assert user_dir.is_dir() and user_dir.stat().st_mode & 0o7777 == 0o700


def test_a_user_directory_that_is_not_a_folder_of_comfyuis_stops_the_start(
    tmp_path: Path,
) -> None:
    (tmp_path / "home").mkdir(mode=0o700)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "home" / "user").symlink_to(tmp_path / "elsewhere")
    extra = ["--user-directory", str(tmp_path / "home" / "user")]
    done = _start(tmp_path, main=str(tmp_path / "main.py"), extra=extra)
    assert done.returncode == 2
    assert "the user directory" in done.stderr and "is not a folder of this user's" in done.stderr


def test_comfyuis_user_directory_and_database_go_with_every_stop() -> None:
    """Pack code runs as ComfyUI's user: what it leaves in ComfyUI's settings, user files or
    database must not reach the ComfyUI another caller's job gets after the restart."""
    unit = _unit("comfyui.service")
    argv = shlex.split(unit["ExecStart"][0])
    home = _env("comfyui.service")["HOME"]
    assert home.startswith("/var/tmp/") and unit["PrivateTmp"] == ["yes"]
    user_dir = argv[argv.index("--user-directory") + 1]
    database = argv[argv.index("--database-url") + 1]
    assert user_dir.startswith(home + "/")
    assert database.startswith(f"sqlite:///{home}/")
    # The image makes no persistent user folder for it.
    assert " user; do" not in (SCRIPTS / "02-comfyui.sh").read_text()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{not json", "is not JSON"),
        ("[1]", "not an object"),
        ({"environment_id": "env-1", "custom_nodes": "relative/nodes"}, "absolute path"),
        ({"environment_id": "env-1", "custom_nodes": "/nowhere/at/all"}, "not a folder"),
        ({"environment_id": "env-1", "custom_nodes": "NODES\n/etc", "site_packages": "SITE"}, ""),
        ({"environment_id": 7, "custom_nodes": "NODES", "site_packages": "SITE"}, "a string"),
    ],
)
def test_a_layer_file_the_worker_never_writes_stops_the_start(
    tmp_path: Path, body: object, why: str
) -> None:
    folders = _layer(tmp_path, "")
    if isinstance(body, dict):
        body = {
            k: v.replace("NODES", str(folders["custom_nodes"])).replace(
                "SITE", str(folders["site_packages"])
            )
            if isinstance(v, str)
            else v
            for k, v in body.items()
        }
    text = body if isinstance(body, str) else json.dumps(body)
    (tmp_path / "run" / "comfyui-layer.json").write_text(text)
    done = _start(tmp_path, "--print")
    assert done.returncode == 2
    assert "refusing to start ComfyUI" in done.stderr and why in done.stderr
    assert done.stdout == ""


# --- The image's wiring -----------------------------------------------------------------------


def test_comfyui_unit_runs_the_start_with_comfyuis_own_python() -> None:
    (exec_start,) = _unit("comfyui.service")["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[:4] == ["/opt/comfyui/.venv/bin/python", "-I", _common("COMFYUI_START"), "main.py"]
    assert (
        'install -m 0644 "${COMFYBURST_SRC}/systemd/comfyui_start.py" "${COMFYUI_START}"'
        in (SCRIPTS / "05-systemd.sh").read_text()
    )


def test_worker_and_comfyui_agree_on_the_layer_file_and_its_folder() -> None:
    worker, comfyui = _env("comfyburst-worker.service"), _env("comfyui.service")
    layer_file = worker["COMFYBURST_WORKER_COMFYUI_LAYER_FILE"]
    assert comfyui["COMFYBURST_COMFYUI_LAYER_FILE"] == layer_file
    tmpfiles = {
        line.split()[1]: line.split()
        for line in (SYSTEMD / "comfyburst.tmpfiles.conf").read_text().splitlines()
        if line.startswith("d ")
    }
    # Made at boot: the worker's (setgid, group comfyui reads), and ComfyUI's own for the YAML.
    assert tmpfiles[str(Path(layer_file).parent)][2:5] == ["2750", "comfyburst", "comfyui"]
    paths = Path(comfyui["COMFYBURST_COMFYUI_LAYER_PATHS"])
    assert tmpfiles[str(paths.parent)][2:5] == ["0700", "comfyui", "comfyui"]


def test_worker_builds_and_keeps_layers_where_the_image_made_them() -> None:
    worker = _env("comfyburst-worker.service")
    assert worker["COMFYBURST_WORKER_ENV_LAYERS_DIR"] == _common("ENV_LAYERS_DIR")
    assert worker["COMFYBURST_WORKER_ENV_BASE_PYTHON"] == "/opt/comfyui/.venv/bin/python"
    assert worker["COMFYBURST_WORKER_ENV_COMFYUI_DIR"] == _common("COMFYUI_DIR")
    assert shlex.split(worker["COMFYBURST_WORKER_ENV_BUILD_AS"]) == [
        "sudo", "-n", "-u", _common("BUILD_USER"), "--"
    ]  # fmt: skip
    assert worker["COMFYBURST_WORKER_ENV_BUILD_USER"] == _common("BUILD_USER")


def test_builds_run_a_pip_and_a_folder_that_the_build_user_may_use() -> None:
    """The worker's own venv is closed to the build user: builds run the tools venv's pip,
    pinned new enough for `--python`, in `builds/`, made the build user's own by the image."""
    worker = _env("comfyburst-worker.service")
    assert worker["COMFYBURST_WORKER_ENV_PIP_COMMAND"] == f"{_common('TOOLS_DIR')}/bin/pip"
    comfyui = (SCRIPTS / "02-comfyui.sh").read_text()
    assert '"${TOOLS_DIR}/bin/pip" install --quiet "pip==${PIP_VERSION}"' in comfyui
    assert tuple(int(x) for x in _common("PIP_VERSION").split(".")[:2]) >= (22, 3)
    worker_sh = (SCRIPTS / "04-worker.sh").read_text()
    made = 'install -d -o "${BUILD_USER}" -g "${BUILD_USER}" -m 0700 "${ENV_LAYERS_DIR}/builds"'
    assert made in worker_sh


def test_sudoers_allows_exactly_the_restart_and_builds_as_the_build_user() -> None:
    worker = _env("comfyburst-worker.service")
    restart = shlex.split(worker["COMFYBURST_WORKER_COMFYUI_RESTART_COMMAND"])
    assert restart[:2] == ["sudo", "-n"]
    rules = [
        line
        for line in (SYSTEMD / "comfyburst-environments.sudoers").read_text().splitlines()
        if line and not line.startswith(("#", "Defaults"))
    ]
    assert rules == [
        f"comfyburst ALL=(root) NOPASSWD: {' '.join(restart[2:])}",
        f"comfyburst ALL=({_common('BUILD_USER')}) NOPASSWD: ALL",
    ]
    # sudo skips sudoers.d files whose names hold a '.': the installed name has none.
    text = (SCRIPTS / "05-systemd.sh").read_text()
    installed = re.search(
        r"(/etc/sudoers\.d/\S+)\n", text.split("comfyburst-environments.sudoers")[1]
    )
    assert installed is not None and "." not in installed.group(1).rsplit("/", 1)[1]
    assert f"visudo -cf {installed.group(1)}" in text


# --- A real ComfyUI loads a layer's node through the start ------------------------------------

_PACK = """
import layer_probe_dep


class LayerProbeNode:
    CATEGORY = "LayerProbe"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": layer_probe_dep.DEFAULT})}}

    def run(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {"LayerProbeNode": LayerProbeNode}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.real_comfyui
def test_real_comfyui_loads_a_layers_node_through_the_start(tmp_path: Path) -> None:
    comfy = Path(os.environ.get("COMFYUI_DIR", ""))
    python = Path(os.environ.get("COMFYUI_PYTHON", comfy / "venv" / "bin" / "python"))
    if not os.environ.get("COMFYUI_DIR") or not (comfy / "main.py").is_file():
        pytest.skip("COMFYUI_DIR is not set (needs a real ComfyUI checkout)")
    if not python.is_file():
        pytest.skip("set COMFYUI_PYTHON to the Python that runs ComfyUI")
    folders = _layer(tmp_path, "")
    (folders["custom_nodes"] / "layer_probe_pack").mkdir()
    (folders["custom_nodes"] / "layer_probe_pack" / "__init__.py").write_text(_PACK)
    # A requirement of the pack, importable only from the layer's site-packages.
    (folders["site_packages"] / "layer_probe_dep.py").write_text("DEFAULT = 42\n")
    body = {"environment_id": "env-1", **{k: str(v) for k, v in folders.items()}}
    (tmp_path / "run" / "comfyui-layer.json").write_text(json.dumps(body))
    port = _free_port()
    dirs = []
    for name in ("output", "input", "temp"):
        (tmp_path / name).mkdir()
        dirs += [f"--{name}-directory", str(tmp_path / name)]
    # As the unit: the user directory inside a home neither exists yet (the start makes both).
    dirs += ["--user-directory", str(tmp_path / "home" / "user")]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "COMFYBURST_COMFYUI_LAYER_FILE": str(tmp_path / "run" / "comfyui-layer.json"),
        "COMFYBURST_COMFYUI_LAYER_PATHS": str(tmp_path / "layer-paths.yaml"),
    }
    argv = [str(python), "-I", str(START), "main.py", "--cpu", "--listen", "127.0.0.1"]
    argv += ["--port", str(port), "--disable-auto-launch", *dirs]
    argv += ["--database-url", f"sqlite:///{tmp_path / 'home' / 'user' / 'comfyui.db'}"]
    log = (tmp_path / "comfyui.log").open("w")
    proc = subprocess.Popen(argv, cwd=comfy, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        info = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                resp = requests.get(
                    f"http://127.0.0.1:{port}/object_info/LayerProbeNode", timeout=5
                )
                if resp.status_code == 200:  # ready: every custom node has loaded
                    info = resp.json()
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        text = (tmp_path / "comfyui.log").read_text(errors="replace")
        assert info, f"ComfyUI did not serve the layer's node:\n{text[-3000:]}"
        node = info["LayerProbeNode"]
        assert node["input"]["required"]["value"][1]["default"] == 42  # the layer's dependency
        assert str(folders["custom_nodes"]) in text  # ComfyUI named the extra custom_nodes path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_rehearsal_systemctl_makes_the_tmpfiles_folders(tmp_path: Path) -> None:
    import grp
    import pwd

    from tests.bake import systemctl_standin as sc

    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    image = (SYSTEMD / "comfyburst.tmpfiles.conf").read_text()
    # The image's lines, with this machine's user and group and a folder under tmp_path.
    line = r"(?m)^d\s+/run/(\S+)\s+(\d+)\s+\S+\s+\S+"
    conf = re.sub(line, rf"d {tmp_path}/run/\1 \2 {user} {group}", image)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "comfyburst.conf").write_text(conf)
    made = sc.make_tmpfiles(tmp_path / "conf")
    assert made == [tmp_path / "run" / "comfyburst", tmp_path / "run" / "comfyui"]
    assert (tmp_path / "run" / "comfyburst").stat().st_mode & 0o7777 == 0o2750
    assert (tmp_path / "run" / "comfyui").stat().st_mode & 0o7777 == 0o700
    (tmp_path / "conf" / "comfyburst.conf").write_text(f"L {tmp_path}/x - - - - /etc\n")
    with pytest.raises(sc.UnitError):
        sc.make_tmpfiles(tmp_path / "conf")
