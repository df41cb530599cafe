"""A real ComfyUI with the ComfyBurst nodes loaded, talking to a local cloud (for the
`real_comfyui` node tests).

Needs COMFYUI_DIR: a ComfyUI checkout whose `custom_nodes/` holds a link to this repo's
`comfy_node/` (its core copy made by `make node-core`), run by a Python that has ComfyUI's
requirements and `pip install -r comfy_node/requirements.txt` (COMFYUI_PYTHON, default: a
`venv` next to or inside COMFYUI_DIR). One local cloud (VMs run the ComfyUI stand-in) and one
ComfyUI on a free port, with its own folders, serve the whole session.
COMFYUI_FRONTEND_ROOT (optional): another frontend's `static` folder (e.g. a newer
`comfyui-frontend-package` installed with `pip install --target DIR`); the browser tests then
also run on a second ComfyUI started with `--front-end-root` on it, beside the same local cloud.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests

from tests._e2e_support import REPO_ROOT

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_FRONTEND_ROOT = os.environ.get("COMFYUI_FRONTEND_ROOT", "")
PACKAGE_DIR = REPO_ROOT / "comfy_node"
START_TIMEOUT_S = 180.0
# ImageBlur runs for seconds on the stand-in, with progress: a remote job to watch or interrupt.
STANDIN_FAULTS = {"slow_node_class": "ImageBlur", "slow_node_s": 4.0, "sampler_steps": 10}
# A custom-node pack of this ComfyUI that the GPU image lacks: its type is named with the pack.
LOCAL_PACK = "ComfyUI-LocalPack"
LOCAL_PACK_REMOTE = "https://github.com/example-org/ComfyUI-LocalPack.git"
LOCAL_PACK_TYPE = "LocalPackBlur"
_LOCAL_PACK_CODE = """
class LocalPackBlur:
    CATEGORY = "LocalPack"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "radius": ("INT", {"default": 1, "min": 1})}}

    def blur(self, image, radius):
        return (image,)


NODE_CLASS_MAPPINGS = {"LocalPackBlur": LocalPackBlur}
"""


def _python(comfy_dir: Path) -> Path | None:
    if os.environ.get("COMFYUI_PYTHON"):
        return Path(os.environ["COMFYUI_PYTHON"])
    for candidate in (comfy_dir / "venv", comfy_dir / ".venv", comfy_dir.parent / "venv"):
        if (candidate / "bin" / "python").exists():
            return candidate / "bin" / "python"
    return None


def _linked_package(comfy_dir: Path) -> Path | None:
    """The custom_nodes entry that is this repo's comfy_node (by resolved path)."""
    custom = comfy_dir / "custom_nodes"
    for entry in custom.iterdir() if custom.is_dir() else ():
        if entry.resolve() == PACKAGE_DIR.resolve():
            return entry
    return None


def skip_reason() -> str | None:
    """Why the real-ComfyUI node tests cannot run here (None when they can)."""
    if not COMFYUI_DIR:
        return "COMFYUI_DIR is not set (needs a real ComfyUI checkout)"
    comfy_dir = Path(COMFYUI_DIR)
    if not (comfy_dir / "main.py").exists():
        return f"COMFYUI_DIR={COMFYUI_DIR} has no main.py"
    if _python(comfy_dir) is None:
        return "set COMFYUI_PYTHON to the Python that runs ComfyUI"
    if _linked_package(comfy_dir) is None:
        return f"link the node into ComfyUI: ln -s {PACKAGE_DIR} {comfy_dir}/custom_nodes/"
    return None


def make_local_pack(custom_nodes: Path) -> tuple[Path, str]:
    """A git-tracked pack (remote and one commit) in `custom_nodes`; its folder and commit."""
    folder = custom_nodes / LOCAL_PACK
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(_LOCAL_PACK_CODE)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (
        ["init", "-q"],
        ["remote", "add", "origin", LOCAL_PACK_REMOTE],
        ["add", "__init__.py"],
        ["commit", "-q", "-m", "LocalPackBlur"],
    ):
        subprocess.run([*git, *argv], check=True, capture_output=True)
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return folder, commit


def local_pack_line(commit: str) -> str:
    """How the node names LocalPackBlur's pack (NAME (REMOTE @ COMMIT))."""
    return f"{LOCAL_PACK_TYPE}: from {LOCAL_PACK} ({LOCAL_PACK_REMOTE} @ {commit[:12]})"


def _stale_vendored_core() -> list[str]:
    """How the node's generated core copy (comfy_node/_vendor/, `make node-core`) differs from
    functions/comfyburst/: the node imports that copy, not an installed package."""
    from tools.vendor_core import DEFAULT_DEST, differences

    return differences(DEFAULT_DEST)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ComfyStack:
    """A running ComfyUI (with our nodes) and the local cloud it sends jobs to."""

    url: str
    output_dir: Path
    log_path: Path
    package_name: str
    local_pack_commit: str
    cloud_env: dict[str, str]
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def queue(self, prompt: dict[str, Any]) -> str:
        response = requests.post(f"{self.url}/prompt", json={"prompt": prompt}, timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()["prompt_id"])

    def history_ids(self) -> set[str]:
        return set(requests.get(f"{self.url}/history", timeout=30).json())

    def queued_ids(self) -> set[str]:
        """Prompts running or waiting in this ComfyUI's queue."""
        queue = requests.get(f"{self.url}/queue", timeout=30).json()
        return {item[1] for item in queue["queue_running"] + queue["queue_pending"]}

    def wait_done(self, prompt_id: str, timeout_s: float = 240.0) -> dict[str, Any]:
        """Poll /history until the prompt ends (success or error); its history entry."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entry = requests.get(f"{self.url}/history/{prompt_id}", timeout=30).json()
            status = (entry.get(prompt_id) or {}).get("status") or {}
            if status.get("completed") or status.get("status_str") == "error":
                return dict(entry[prompt_id])
            assert self.process.poll() is None, f"ComfyUI exited:\n{self.log()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not end in {timeout_s} s")

    def saved_files(self, entry: dict[str, Any], node_id: str) -> list[Path]:
        images = entry["outputs"][node_id]["images"]
        assert all(image["type"] == "output" for image in images), images
        return [self.output_dir / i["subfolder"] / i["filename"] for i in images]


_stack: ComfyStack | None = None
_stacks_by_frontend: dict[str, ComfyStack] = {}


def frontend_root_reason() -> str | None:
    """Why no second frontend can be tried (None when COMFYUI_FRONTEND_ROOT is usable)."""
    if not COMFYUI_FRONTEND_ROOT:
        return "COMFYUI_FRONTEND_ROOT is not set (another frontend's static folder)"
    if not (Path(COMFYUI_FRONTEND_ROOT) / "index.html").is_file():
        return f"COMFYUI_FRONTEND_ROOT={COMFYUI_FRONTEND_ROOT} has no index.html"
    return None


def comfy_stack(request: pytest.FixtureRequest, front_end_root: str = "") -> ComfyStack:
    """Start the local cloud and the ComfyUI once per session (stopped when it ends); with
    `front_end_root`, another ComfyUI serving that frontend, sending jobs to the same cloud."""
    global _stack
    if _stack is None:
        reason = skip_reason()
        if reason:
            pytest.skip(reason)
        root = request.config._tmp_path_factory.mktemp("comfy-real")  # type: ignore[attr-defined]
        _stack = start_stack(root, request.config.add_cleanup)
    if not front_end_root:
        return _stack
    if front_end_root not in _stacks_by_frontend:
        root = request.config._tmp_path_factory.mktemp("comfy-real-frontend")  # type: ignore[attr-defined]
        _stacks_by_frontend[front_end_root] = start_comfyui(
            request.config.add_cleanup, root, _stack.cloud_env, front_end_root
        )
    return _stacks_by_frontend[front_end_root]


def start_stack(
    root: Path,
    add_cleanup: Callable[[Callable[[], None]], None],
    settings_env: dict[str, str] | None = None,
    front_end_root: str = "",
) -> ComfyStack:
    """A local cloud (VMs run the ComfyUI stand-in; `settings_env` on top of its settings) and
    COMFYUI_DIR's ComfyUI sending jobs to it (serving `front_end_root`'s frontend if given),
    under `root`; `add_cleanup` gets what stops each (tools/screenshots.py uses it too)."""
    cloud_env = start_cloud(root, add_cleanup, settings_env)
    return start_comfyui(add_cleanup, root, cloud_env, front_end_root)


def start_cloud(
    root: Path,
    add_cleanup: Callable[[Callable[[], None]], None],
    settings_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The local cloud of `start_stack` alone, warmed up; its environment."""
    from localcloud.cloud import LocalCloud
    from localcloud.scenarios.harness import arm_standin_faults, cloud_config, vm_names, warm_up

    config = cloud_config(root / "cloud", pool_size=2, settings_env=settings_env)
    # The VMs must run the ComfyUI stand-in, whatever COMFYUI_URL this shell has exported.
    config = replace(config, guest_env={**config.guest_env, "COMFYUI_URL": ""})
    arm_standin_faults(config.state_dir, vm_names(config), STANDIN_FAULTS)
    cloud = LocalCloud(config)

    def stop_cloud() -> None:
        cloud.stop()

    add_cleanup(stop_cloud)
    cloud.start()
    warm_up(cloud.env)
    return dict(cloud.env)


def start_comfyui(
    add_cleanup: Callable[[Callable[[], None]], None],
    root: Path,
    cloud_env: dict,
    front_end_root: str = "",
    extra_custom_nodes: Path | None = None,
) -> ComfyStack:
    """COMFYUI_DIR's ComfyUI under `root` sending jobs to the cloud of `cloud_env`; its custom
    nodes: the local pack, and `extra_custom_nodes` (another custom_nodes folder) if given."""
    comfy_dir = Path(COMFYUI_DIR)
    python = _python(comfy_dir)
    assert python is not None
    stale = _stale_vendored_core()
    assert not stale, f"the node's core copy is stale ({', '.join(stale)}): make node-core"
    dirs = {name: root / "comfyui" / name for name in ("input", "output", "temp", "user")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    # A fresh user folder: no first-run template browser over the canvas.
    settings = dirs["user"] / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    # Another custom_nodes folder (ComfyUI reads `custom_nodes` from the extra paths file)
    # with a local pack, so COMFYUI_DIR itself is left as it is.
    _, pack_commit = make_local_pack(root / "packs" / "custom_nodes")
    extra_paths = root / "extra_model_paths.yaml"
    extra_paths.write_text(
        f"comfyburst_test:\n  base_path: {root / 'packs'}\n  custom_nodes: custom_nodes/\n"
        + (
            f"comfyburst_more:\n  custom_nodes: {extra_custom_nodes}\n"
            if extra_custom_nodes
            else ""
        )
    )
    port = _free_port()
    argv = [
        str(python),
        "main.py",
        *("--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"),
        *("--output-directory", str(dirs["output"]), "--input-directory", str(dirs["input"])),
        *("--temp-directory", str(dirs["temp"]), "--user-directory", str(dirs["user"])),
        *("--database-url", f"sqlite:///{root / 'comfyui' / 'comfyui.db'}"),
        *("--extra-model-paths-config", str(extra_paths)),
        *(("--front-end-root", front_end_root) if front_end_root else ()),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYBURST_")}
    env.update(COMFYBURST_API_URL=cloud_env["COMFYBURST_API_URL"], COMFYBURST_AUTH="none")
    log_path = root / "comfyui.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=comfy_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    add_cleanup(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"ComfyUI exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if requests.get(f"{url}/system_stats", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no ComfyUI after {START_TIMEOUT_S} s:\n{_tail(log_path)}")
        time.sleep(0.2)
    package = _linked_package(comfy_dir)
    assert package is not None
    return ComfyStack(url, dirs["output"], log_path, package.name, pack_commit, cloud_env, process)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


def random_colour() -> tuple[int, tuple[int, int, int]]:
    """A 24-bit colour as EmptyImage takes it and its RGB; varies per run so ComfyUI's cache
    never answers for the remote job. No channel near the middle: inverted differs clearly."""
    rgb = tuple(random.choice([random.randrange(100), random.randrange(156, 256)]) for _ in "rgb")
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2], rgb  # type: ignore[return-value]


def remote_invert(colour: int, batch_size: int = 1, size: int = 64) -> dict[str, Any]:
    """The remote workflow: EmptyImage(colour) → ImageInvert → SaveImage."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": batch_size, "color": colour},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
    }


def with_scale_node(graph: dict[str, Any]) -> dict[str, Any]:
    """`graph` (remote_invert's) with an ImageScale (node 5) between the invert and the save."""
    graph["5"] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["2", 0], "upscale_method": "nearest-exact", "width": 8, "height": 8,
            "crop": "disabled",
        },
    }  # fmt: skip
    graph["3"]["inputs"]["images"] = ["5", 0]
    return graph


# In the page: an upscale_method the frontend's combo cannot hold, so only the pre-flight can
# reject it.
BAD_UPSCALE_JS = (
    "window.comfyAPI.app.app.graph.nodes.find(n => n.type === 'ImageScale')"
    ".widgets.find(w => w.name === 'upscale_method').value = 'no-such-method'"
)


def inverted(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (255 - rgb[0], 255 - rgb[1], 255 - rgb[2])


def close(pixel: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    # float32 round trips, then truncation to uint8 on save: 255 - c may come out 254 - c.
    return all(abs(a - b) <= 1 for a, b in zip(pixel, expected, strict=True))
