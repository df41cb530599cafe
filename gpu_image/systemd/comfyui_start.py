"""ComfyUI's start (comfyui.service ExecStart): the base command line, plus the active layer.

Run with ComfyUI's own interpreter in isolated mode (`python -I comfyui-start MAIN_PY ARGS...`),
as ComfyUI's user. It reads the active layer file the worker writes (COMFYBURST_COMFYUI_LAYER_FILE,
JSON {environment_id, custom_nodes, site_packages}; absent, null or a null environment_id: the
base environment) and replaces itself with `python MAIN_PY ARGS...`; with a layer, it adds
`--extra-model-paths-config PATHS` (a YAML whose `custom_nodes` key is the layer's folder: ComfyUI
0.3.64 adds every key of such a file as a folder path, and loads custom nodes from every
`custom_nodes` path) and puts the layer's site-packages on PYTHONPATH.

It also makes ComfyUI's home (HOME, mode 0700: the unit puts it in its private /var/tmp, which
systemd removes at every stop) and the `--user-directory` the unit names inside it (ComfyUI's
settings, user files and database: what one environment's pack code writes there is gone at
the restart before another caller's job). A layer file that is not what the worker writes, or a
HOME or user directory that is not a folder of this user's, stops the start (exit 2): ComfyUI
never runs in an environment other than the one the worker asked for. `--print` prints the
command instead of running it (the bake rehearsal and the tests).
"""

import json
import os
import stat
import sys

LAYER_FILE = os.environ.get("COMFYBURST_COMFYUI_LAYER_FILE", "/run/comfyburst/comfyui-layer.json")
# ComfyUI's own runtime folder (tmpfiles.d, mode 0700): the YAML is rewritten at every start.
PATHS_FILE = os.environ.get("COMFYBURST_COMFYUI_LAYER_PATHS", "/run/comfyui/layer-paths.yaml")
USAGE = "usage: comfyui-start [--print] MAIN_PY [COMFYUI ARGUMENTS...]"


class LayerRefused(Exception):
    """The active layer file is not one this script starts ComfyUI with."""


def read_layer(path: str) -> dict[str, str] | None:
    """The active layer's folders, or None for the base environment."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        return None
    try:
        layer = json.loads(text) if text.strip() else None
    except ValueError as exc:
        raise LayerRefused(f"{path} is not JSON: {exc}") from None
    if layer is None:
        return None
    if not isinstance(layer, dict):
        raise LayerRefused(f"{path} holds {type(layer).__name__}, not an object")
    if layer.get("environment_id") is None:
        return None
    folders = {"environment_id": layer["environment_id"]}
    for key in ("custom_nodes", "site_packages"):
        value = layer.get(key)
        # extra_model_paths values are split on newlines: no control characters in a path.
        if not isinstance(value, str) or not os.path.isabs(value):
            raise LayerRefused(f"{path}: {key} must be an absolute path, not {value!r}")
        if any(ord(c) < 32 for c in value) or not os.path.isdir(value):
            raise LayerRefused(f"{path}: {key} {value!r} is not a folder")
        folders[key] = value
    if not isinstance(folders["environment_id"], str):
        raise LayerRefused(f"{path}: environment_id must be a string")
    return folders


def make_private(path: str | None, what: str) -> None:
    """`path` as this user's own folder (0700), made if absent; LayerRefused if it is not."""
    if not path or not os.path.isabs(path):
        raise LayerRefused(f"{what} must be an absolute path, not {path!r}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise LayerRefused(f"{what} {path} is not a folder of this user's")


def user_directory(args: list[str]) -> str | None:
    """The `--user-directory` the unit gives ComfyUI (its settings, user files and database),
    or None. ComfyUI refuses one that does not exist, so the start makes it."""
    for i, arg in enumerate(args):
        if arg == "--user-directory" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--user-directory="):
            return arg.partition("=")[2]
    return None


def make_folders(args: list[str]) -> None:
    """HOME, then the user directory where the unit names one (inside HOME: both go with the
    stop)."""
    make_private(os.environ.get("HOME"), "HOME")
    user_dir = user_directory(args)
    if user_dir is not None:
        make_private(user_dir, "the user directory")


def write_paths(custom_nodes: str, path: str) -> None:
    """The extra model paths YAML naming the layer's custom_nodes folder (atomically)."""
    # A JSON string is a YAML double-quoted scalar: any path, quoted exactly.
    text = (
        "# Written by comfyui-start at each start: the active environment's custom nodes.\n"
        f"comfyburst_environment:\n  custom_nodes: {json.dumps(custom_nodes)}\n"
    )
    partial = f"{path}.{os.getpid()}.part"
    with open(partial, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(partial, path)


def command(main_py: str, args: list[str], layer: dict[str, str] | None) -> list[str]:
    """ComfyUI's argv: the unit's arguments, then the layer's extra paths file."""
    argv = [sys.executable, main_py, *args]
    if layer is not None:
        argv += ["--extra-model-paths-config", PATHS_FILE]
    return argv


def main(argv: list[str]) -> int:
    dry_run = bool(argv) and argv[0] == "--print"
    rest = argv[1:] if dry_run else argv
    if not rest or rest[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        layer = read_layer(LAYER_FILE)
        if not dry_run:
            make_folders(rest[1:])
    except (LayerRefused, OSError) as exc:
        print(f"comfyui-start: refusing to start ComfyUI: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if layer is None:
        if os.path.exists(PATHS_FILE):
            os.unlink(PATHS_FILE)
    else:
        write_paths(layer["custom_nodes"], PATHS_FILE)
        env["PYTHONPATH"] = layer["site_packages"]
    full = command(rest[0], rest[1:], layer)
    label = layer["environment_id"] if layer else None
    if dry_run:
        print(
            json.dumps({"environment_id": label, "argv": full, "pythonpath": env.get("PYTHONPATH")})
        )
        return 0
    print(f"comfyui-start: environment {label or 'base'}", file=sys.stderr, flush=True)
    os.execve(full[0], full, env)  # noqa: S606 - argv from the unit, never a shell line
    return 127  # not reached: execve replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
