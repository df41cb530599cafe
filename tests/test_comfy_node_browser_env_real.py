"""The "Queue on GPU" button on a graph with a node type from a local pack the GPU image lacks,
in headless Chromium on the real ComfyUI frontend (its pinned one, and COMFYUI_FRONTEND_ROOT's
when set), with environments open on a local cloud whose VMs build them: the page says the
GPU environment is being built, the run node's polls say so again as it waits, a VM builds
the pack (a git repository served over loopback, its requirement a wheel made here), and the
job then runs in that environment and its image is saved by the local ComfyUI.

Each frontend gets its own pack (its own environment), so each sees a first-time build."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests._cdp import Browser, chromium_path
from tests._comfy_real_support import (
    COMFYUI_FRONTEND_ROOT,
    close,
    frontend_root_reason,
    inverted,
    random_colour,
    remote_invert,
    skip_reason,
    start_cloud,
    start_comfyui,
)
from tests._env_pack_support import (
    GIT_ENV,
    git_http_server,
    make_base_venv,
    make_wheelhouse,
    pip_args,
    serve_pack,
)
from tests.test_comfy_node_browser import (
    NOTICES,
    Frontend,
    _click_button,
    _close_dialogs,
    _load_graph,
    _new_prompt,
    _open_page,
    _real_queued,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.real_comfyui,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        chromium_path() is None, reason="no Chromium (`make browser-tools` installs it)"
    ),
]

PACK_TYPE = "CbEnvPassImage"
# Seconds each import of the pack takes where its requirement is installed: the build (its
# import probe) outlasts the run node's first look at the environment, however fast the VM.
BUILD_IMPORT_S = 6
# Loads in the local ComfyUI (which lacks the requirement: the node never runs there); on the
# GPU its run imports the requirement from the environment's layer.
PACK_CODE = f"""
class PassImage:
    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"image": ("IMAGE",)}}}}

    def run(self, image):
        from cbenvdep import FACTOR

        assert FACTOR == 2
        return (image,)


NODE_CLASS_MAPPINGS = {{"{PACK_TYPE}": PassImage}}

try:  # where the requirement is installed (the build's import probe, the GPU's ComfyUI)
    import cbenvdep  # noqa: F401
except ImportError:  # the local ComfyUI
    pass
else:  # a build that outlasts the run node's first look: it tells the wait, not the end
    import time

    time.sleep({BUILD_IMPORT_S})
"""
# What any of our notices says while the build runs: the route's (at the click) and the run
# node's (each poll, with the time waited so far).
STATUS = "#comfyburst-status"
ALL_NOTICES = f"{NOTICES}, {STATUS}"
WAITED = "; the job starts once it is built"


@dataclass
class Rig:
    """The module's cloud (environments open to its git server) and what makes packs."""

    cloud_env: dict[str, str]
    new_pack: Callable[[str], tuple[Path, str]]  # name → the custom_nodes folder, pack text


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"real ComfyUI frontend: {reason}")
    root = tmp_path_factory.mktemp("env-browser")
    wheels = make_wheelhouse(root / "wheels")
    cleanups: list[Callable[[], None]] = []
    try:
        base_python = make_base_venv(root / "base", wheels)
        with git_http_server(root / "served") as hostport:
            settings_env = {
                "COMFYBURST_HTTP_MODEL_HOSTS": hostport,
                "COMFYBURST_CUSTOM_NODE_SOURCES": f"{hostport}/owner",
                # The VM builds as its own (only) user, from the wheels made here.
                "COMFYBURST_WORKER_ENV_BASE_PYTHON": str(base_python),
                "COMFYBURST_WORKER_ENV_BUILD_UNISOLATED": "true",
                "COMFYBURST_WORKER_ENV_PIP_ARGS": " ".join(pip_args(wheels)),
                "PIP_CONFIG_FILE": os.devnull,
            }
            cloud_env = start_cloud(root / "stack", cleanups.append, settings_env)

            def new_pack(name: str) -> tuple[Path, str]:
                work = root / f"work-{name}"
                text = serve_pack(root / "served", hostport, work, name, init_text=PACK_CODE)
                # The local checkout's origin is the served repository, as after a clone.
                url = text.rpartition("@")[0]
                argv = ["git", "-C", str(work / name), "remote", "add", "origin", url]
                subprocess.run(argv, check=True, env={**os.environ, **GIT_ENV})
                return work, text

            yield Rig(cloud_env, new_pack)
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


@pytest.fixture(
    scope="module",
    params=["comfyui", "comfyui-frontend-root"],
)
def frontend(
    request: pytest.FixtureRequest, rig: Rig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Frontend, str]]:
    """A ComfyUI of its own with a new local pack, its page open; and the pack's text."""
    front_end_root = ""
    if request.param == "comfyui-frontend-root":
        if frontend_root_reason() is not None:
            pytest.skip(f"another ComfyUI frontend: {frontend_root_reason()}")
        front_end_root = COMFYUI_FRONTEND_ROOT
    custom_nodes, pack = rig.new_pack(f"envpack-{request.param}")
    root = tmp_path_factory.mktemp(f"comfy-{request.param}")
    # Its own ComfyUI, stopped when this frontend's tests end (not with the module's cloud).
    cleanups: list[Callable[[], None]] = []
    try:
        stack = start_comfyui(cleanups.append, root, rig.cloud_env, front_end_root, custom_nodes)
        browser = _open_page(stack.url, tmp_path_factory.mktemp("chromium-profile"))
        try:
            commit = pack.rpartition("@")[2]
            yield Frontend(browser, lambda: _real_queued(stack), commit, stack), pack
        finally:
            browser.close()
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def _notice_text(browser: Browser, pattern: str, timeout_s: float) -> str:
    """The text of our notices once one of them matches the JS regular expression."""
    text: str = browser.wait_for(
        f"(() => {{ const t = [...document.querySelectorAll('{ALL_NOTICES}')]"
        ".map(d => d.innerText).join('\\n');"
        f" return /{pattern}/.test(t) ? t : null; }})()",
        timeout_s,
    )
    return text


def _one_status_notice(browser: Browser) -> None:
    """Within a few seconds (a replaced toast fades out), one building notice: the run node's."""
    count = (
        f"(() => {{ const t = [...document.querySelectorAll('{ALL_NOTICES}')]"
        ".map(d => d.innerText).filter(t => t.includes('building the GPU environment'));"
        f" return t.length === 1 && /— \\d+ s{WAITED}/.test(t[0]) ? t : t.length; }})()"
    )
    deadline = time.monotonic() + 8
    while not isinstance(seen := browser.evaluate(count), list):
        assert time.monotonic() < deadline, f"{seen} building notices at once, not one"
        time.sleep(0.2)


def test_queue_on_gpu_builds_the_environment_then_runs_the_job_in_it(
    frontend: tuple[Frontend, str], tmp_path: Path
) -> None:
    page, pack = frontend
    browser, stack = page.browser, page.stack
    assert stack is not None
    _close_dialogs(browser)
    value, rgb = random_colour()
    graph = remote_invert(value, size=48)
    graph["5"] = {"class_type": PACK_TYPE, "inputs": {"image": ["2", 0]}}
    graph["3"]["inputs"]["images"] = ["5", 0]
    _load_graph(browser, graph)
    before = set(page.queued())
    _click_button(browser)
    name = pack.rpartition("@")[0].rpartition("/")[2]
    told = _notice_text(browser, "building the GPU environment \\(first time\\)", 60)
    assert name in told, told
    print(f"screenshot: {browser.screenshot(tmp_path / 'building-environment.png')}")
    prompt_id, prompt = _new_prompt(page, before, timeout_s=60)
    env_id = prompt["comfyburst_run"]["inputs"]["environment"]
    api = stack.cloud_env["COMFYBURST_API_URL"]
    env = requests.get(f"{api}/environments/{env_id}", timeout=30).json()
    assert env["packs"] == [pack], env
    # The run node's own word while it waits: the time waited so far (the route's has none),
    # in the one notice, which each update replaces (the route's included).
    polled = _notice_text(browser, f"— \\d+ s{WAITED}", 120)
    assert name in polled, polled
    _one_status_notice(browser)

    entry = stack.wait_done(prompt_id, timeout_s=420)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (saved,) = stack.saved_files(entry, "comfyburst_save")
    with Image.open(saved) as image:
        assert close(image.convert("RGB").getpixel((5, 5)), inverted(rgb))
    env = requests.get(f"{api}/environments/{env_id}", timeout=30).json()
    assert env["state"] == "ready" and env["node_types"] == [PACK_TYPE], env
