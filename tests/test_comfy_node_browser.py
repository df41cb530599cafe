"""The "Queue on GPU" button in headless Chromium (over CDP), on three frontends: the stand-in
page (tests/_node_page.py: our real extension and route, stand-ins of the two frontend
modules it imports; runs in `make test`), the real ComfyUI's pinned frontend (COMFYUI_DIR set,
`real_comfyui`) and another frontend served by the same ComfyUI (COMFYUI_FRONTEND_ROOT, e.g.
today's: action-bar button, issues panel and toasts instead of the dialog). A graph queued
with the button is sent to run remotely (on the real ComfyUI it runs on the local cloud and
its images are saved); a graph that fails pre-flight is shown on its node and not queued;
node types the GPU image lacks are named with their local pack."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests._cdp import Browser, chromium_path
from tests._comfy_real_support import (
    BAD_UPSCALE_JS,
    COMFYUI_FRONTEND_ROOT,
    LOCAL_PACK_TYPE,
    ComfyStack,
    close,
    comfy_stack,
    frontend_root_reason,
    inverted,
    local_pack_line,
    make_local_pack,
    random_colour,
    remote_invert,
    skip_reason,
    with_scale_node,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        chromium_path() is None, reason="no Chromium (`make browser-tools` installs it)"
    ),
]

# Our button wherever the frontend draws it: its action bar (>= 1.32.4), the legacy top-menu
# group (older ones) or, with neither, a fixed button (the stand-in page).
BUTTON = ".comfyburst-queue-on-gpu"
APP = "window.comfyAPI.app.app"
# What tells the user of a refusal: a dialog (frontends before their issues panel, the stand-in
# page) or a toast of the frontend's toast service (PrimeVue's in older releases, Reka's in 1.58).
NOTICE_KINDS = ("[role=dialog]", ".p-toast-message", "[data-testid=toast]")
NOTICES = ", ".join(f"{kind}:not([data-comfyburst-seen])" for kind in NOTICE_KINDS)
# Masks and toasts outlive their close while they fade out: nothing to click through.
LEAVING = ".p-dialog-mask, .p-overlay-mask, .p-toast-message, [data-testid=toast]"


@dataclass
class Frontend:
    """A page with our extension loaded, and what its "ComfyUI" has queued."""

    browser: Browser
    queued: Callable[[], dict[str, dict[str, Any]]]  # prompt id → the local prompt
    pack_commit: str
    stack: ComfyStack | None = None  # the real ComfyUI, when that is the frontend


def _open_page(url: str, profile: Path) -> Browser:
    browser = Browser(str(chromium_path()), profile)
    try:
        browser.send("Page.navigate", url=url)
        browser.wait_for(f"!!document.querySelector('{BUTTON}') && !!{APP}?.graph", 120)
    except BaseException:
        browser.close()
        raise
    return browser


def _real_queued(stack: ComfyStack) -> dict[str, dict[str, Any]]:
    import requests

    history = requests.get(f"{stack.url}/history", timeout=30).json()
    queue = requests.get(f"{stack.url}/queue", timeout=30).json()
    found = {pid: entry["prompt"][2] for pid, entry in history.items()}
    for item in queue["queue_running"] + queue["queue_pending"]:
        found[item[1]] = item[2]
    return found


@pytest.fixture(
    scope="module",
    params=[
        "stand-in",
        pytest.param("comfyui", marks=pytest.mark.real_comfyui),
        # The same ComfyUI serving another frontend (COMFYUI_FRONTEND_ROOT, e.g. today's).
        pytest.param("comfyui-frontend-root", marks=pytest.mark.real_comfyui),
    ],
)
def frontend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Frontend]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    if request.param.startswith("comfyui"):
        if skip_reason() is not None:
            pytest.skip(f"real ComfyUI frontend: {skip_reason()}")
        front_end_root = ""
        if request.param == "comfyui-frontend-root":
            if frontend_root_reason() is not None:
                pytest.skip(f"another ComfyUI frontend: {frontend_root_reason()}")
            front_end_root = COMFYUI_FRONTEND_ROOT
        stack = comfy_stack(request, front_end_root)
        browser = _open_page(stack.url, profile)
        try:
            yield Frontend(browser, lambda: _real_queued(stack), stack.local_pack_commit, stack)
        finally:
            browser.close()
        return
    from tests._node_page import NodePage

    request.getfixturevalue("localcloud_env")  # the API the route asks for its pre-flight
    pack, commit = make_local_pack(tmp_path_factory.mktemp("packs"))
    patch = pytest.MonkeyPatch()
    patch.setenv("COMFYBURST_AUTH", "none")
    page = NodePage(patch, lambda class_type: pack if class_type == LOCAL_PACK_TYPE else None)
    try:
        browser = _open_page(page.url, profile)
        try:
            queued = lambda: {str(i): body["prompt"] for i, body in enumerate(page.queued)}  # noqa: E731
            yield Frontend(browser, queued, commit)
        finally:
            browser.close()
    finally:
        page.close()
        patch.undo()


def _load_graph(browser: Browser, graph: dict[str, Any]) -> None:
    browser.evaluate(f"{APP}.loadApiJson({json.dumps(graph)}, 'comfyburst-test.json')")
    count = browser.evaluate(f"{APP}.graph.nodes.length")
    assert count == len(graph), f"the app holds {count} nodes, expected {len(graph)}"


def _click_button(browser: Browser) -> None:
    """Click where the button is drawn, after checking nothing covers it."""
    box = browser.evaluate(
        f"(() => {{ const r = document.querySelector('{BUTTON}').getBoundingClientRect();"
        " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
    )
    on_top = browser.evaluate(
        f"(() => {{ const e = document.elementFromPoint({box['x']}, {box['y']});"
        f" return e?.closest('{BUTTON}') ? 'button' : e && (e.tagName + '.' + e.className); }})()"
    )
    assert on_top == "button", f"the button is covered by {on_top!r}"
    browser.click(box["x"], box["y"])


def _close_dialogs(browser: Browser) -> None:
    """Dismiss what an earlier test left open (the real frontend's dialogs close on Escape,
    its toasts through its toast service) and wait until their masks have faded out: a click
    during the fade lands on the mask (#23)."""
    for kind in ("keyDown", "keyUp"):
        browser.send("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape")
    browser.evaluate(f"{APP}.extensionManager?.toast?.removeAll?.()")
    browser.wait_for(f"!document.querySelector('{LEAVING}')", 30)
    browser.evaluate(
        f"document.querySelectorAll('{NOTICES}').forEach(d => d.dataset.comfyburstSeen = 1)"
    )


def _new_notice_text(browser: Browser) -> str:
    return str(
        browser.wait_for(
            f"[...document.querySelectorAll('{NOTICES}')].map(d => d.innerText).join('\\n')",
            30,
        )
    )


def _node_errors_for(browser: Browser, class_type: str) -> dict[str, Any]:
    """The app's node errors once they name `class_type` (earlier clicks left theirs)."""
    # Through JSON: the app's store hands out proxies, which CDP would send as empty objects.
    errors: dict[str, Any] = browser.wait_for(
        f"(() => {{ const e = JSON.parse(JSON.stringify({APP}.lastNodeErrors ?? null));"
        f" return e && Object.values(e).some(n => n.class_type === {json.dumps(class_type)})"
        " ? e : null; })()",
        30,
    )
    return errors


def _new_prompt(frontend: Frontend, before: set[str], timeout_s: float = 30.0) -> tuple[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        new = {k: v for k, v in frontend.queued().items() if k not in before}
        if new:
            ((prompt_id, prompt),) = new.items()
            return prompt_id, prompt
        assert time.monotonic() < deadline, "the click queued nothing"
        time.sleep(0.2)


def test_queue_on_gpu_queues_the_graph_to_run_on_the_gpu(
    frontend: Frontend, tmp_path: Path
) -> None:
    browser = frontend.browser
    _close_dialogs(browser)
    value, rgb = random_colour()
    _load_graph(browser, remote_invert(value, size=48))
    before = set(frontend.queued())
    _click_button(browser)
    prompt_id, prompt = _new_prompt(frontend, before)
    assert prompt["comfyburst_run"]["class_type"] == "ComfyBurstRunWorkflow"
    remote = json.loads(prompt["comfyburst_run"]["inputs"]["workflow"])
    assert remote["1"]["inputs"]["color"] == value
    assert prompt["comfyburst_save"]["inputs"]["images"] == ["comfyburst_run", 0]
    stack = frontend.stack
    if stack is not None:  # the real ComfyUI runs it on the local cloud
        entry = stack.wait_done(prompt_id)
        assert entry["status"]["status_str"] == "success", entry["status"]
        (saved,) = stack.saved_files(entry, "comfyburst_save")
        with Image.open(saved) as image:
            assert image.size == (48, 48)
            assert close(image.convert("RGB").getpixel((5, 5)), inverted(rgb))
            assert "workflow" in image.info, "the editor's graph is embedded in the saved PNG"
    assert browser.evaluate(f"document.querySelectorAll('{NOTICES}').length") == 0, (
        "a dialog or toast opened after a successful queue"
    )


def test_queue_on_gpu_shows_preflight_errors_on_the_node(frontend: Frontend) -> None:
    browser = frontend.browser
    _close_dialogs(browser)
    value, _ = random_colour()
    graph = with_scale_node(remote_invert(value, size=48))
    _load_graph(browser, graph)
    browser.evaluate(BAD_UPSCALE_JS)
    before = set(frontend.queued())
    _click_button(browser)
    errors = _node_errors_for(browser, "ImageScale")
    assert [node["class_type"] for node in errors.values()] == ["ImageScale"], errors
    assert "no-such-method" in json.dumps(errors)
    assert "ImageScale" in _new_notice_text(browser)
    assert set(frontend.queued()) == before, "a rejected graph was queued"


def test_queue_on_gpu_names_node_types_the_gpu_lacks_and_their_pack(
    frontend: Frontend, tmp_path: Path
) -> None:
    """A type this ComfyUI has from a local git pack and the GPU catalogue lacks."""
    browser = frontend.browser
    _close_dialogs(browser)
    value, _ = random_colour()
    graph = remote_invert(value, size=48)
    graph["5"] = {"class_type": LOCAL_PACK_TYPE, "inputs": {"image": ["2", 0], "radius": 2}}
    graph["3"]["inputs"]["images"] = ["5", 0]
    _load_graph(browser, graph)
    before = set(frontend.queued())
    _click_button(browser)
    errors = _node_errors_for(browser, LOCAL_PACK_TYPE)
    assert [node["class_type"] for node in errors.values()] == [LOCAL_PACK_TYPE], errors
    (node_error,) = errors["5"]["errors"]
    assert local_pack_line(frontend.pack_commit).endswith(node_error["details"]), node_error
    dialog = _new_notice_text(browser)
    assert "lacks node types" in dialog, dialog
    assert local_pack_line(frontend.pack_commit) in dialog, dialog
    print(f"screenshot: {browser.screenshot(tmp_path / 'missing-node-types.png')}")
    assert set(frontend.queued()) == before, "a rejected graph was queued"


REAL_FRONTENDS = [
    pytest.param("comfyui", marks=pytest.mark.real_comfyui),
    pytest.param("comfyui-frontend-root", marks=pytest.mark.real_comfyui),
]


# Real frontends only: the stand-in page has no command registry nor menus.
@pytest.mark.parametrize("frontend", REAL_FRONTENDS, indirect=True)
def test_queue_on_gpu_is_the_frontends_own_command_and_button(frontend: Frontend) -> None:
    """On a real frontend: a command (menu, palette, keybindings) and a button the frontend
    lays out itself, in its action bar or, before that existed, its top-menu button group."""
    assert frontend.stack is not None
    browser = frontend.browser
    commands = browser.evaluate(
        f"{APP}.extensionManager.command.commands.map(c => c.id)"
        ".filter(id => id.startsWith('ComfyBurst'))"
    )
    assert commands == ["ComfyBurst.QueueOnGpu"]
    container = browser.evaluate(
        f"document.querySelector('{BUTTON}').closest("
        "'[data-testid=action-bar-buttons], .comfyui-button-group')?.className ?? null"
    )
    assert container is not None, "the button is not in the frontend's own bar"
    assert browser.evaluate(f"document.querySelectorAll('{BUTTON}').length") == 1
