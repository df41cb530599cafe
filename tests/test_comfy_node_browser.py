"""The "Queue on GPU" button in a real ComfyUI frontend (headless Chromium over CDP): a graph
loaded into the app and queued with the button runs on the local cloud and its images are saved
by ComfyUI; a graph that fails pre-flight is shown on its node and not queued."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests._cdp import Browser, chromium_path
from tests._comfy_real_support import (
    ComfyStack,
    close,
    comfy_stack,
    inverted,
    random_colour,
    remote_invert,
    skip_reason,
)

pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.timeout(600),
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
    pytest.mark.skipif(chromium_path() is None, reason="no Chromium (apt-get install chromium)"),
]

BUTTON = "#comfyburst-queue-on-gpu"
APP = "window.comfyAPI.app.app"


@pytest.fixture(scope="module")
def page(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ComfyStack, Browser]]:
    """The ComfyUI frontend loaded in Chromium, with our extension set up."""
    stack = comfy_stack(request)
    browser = Browser(str(chromium_path()), tmp_path_factory.mktemp("chromium-profile"))
    try:
        browser.send("Page.navigate", url=stack.url)
        browser.wait_for(f"!!document.querySelector('{BUTTON}') && !!{APP}?.graph", 120)
        yield stack, browser
    finally:
        browser.close()


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
    on_top = browser.evaluate(f"document.elementFromPoint({box['x']}, {box['y']})?.id")
    assert on_top == BUTTON[1:], f"the button is covered by {on_top!r}"
    browser.click(box["x"], box["y"])


def _open_dialogs(browser: Browser) -> list[str]:
    return list(
        browser.evaluate(
            "[...document.querySelectorAll('[role=dialog], .comfy-modal')]"
            ".filter(d => d.offsetParent !== null).map(d => d.innerText.trim())"
        )
    )


def _new_history_entry(stack: ComfyStack, before: set[str], timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        new = stack.history_ids() - before
        queued = stack.queued_ids() - before
        if new or queued:
            (prompt_id,) = new or queued
            return prompt_id
        assert time.monotonic() < deadline, "the click queued nothing"
        time.sleep(0.2)


def test_queue_on_gpu_runs_the_graph_and_saves_its_images(
    page: tuple[ComfyStack, Browser], tmp_path: Path
) -> None:
    stack, browser = page
    value, rgb = random_colour()
    _load_graph(browser, remote_invert(value, size=48))
    shot = browser.screenshot(tmp_path / "comfyui-with-button.png")
    print(f"screenshot: {shot}")
    before = stack.history_ids() | stack.queued_ids()
    _click_button(browser)
    prompt_id = _new_history_entry(stack, before)
    entry = stack.wait_done(prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    prompt = entry["prompt"][2]
    assert prompt["comfyburst_run"]["class_type"] == "ComfyBurstRunWorkflow"
    assert json.loads(prompt["comfyburst_run"]["inputs"]["workflow"])["1"]["inputs"]["color"] == (
        value
    )
    (saved,) = stack.saved_files(entry, "comfyburst_save")
    with Image.open(saved) as image:
        assert image.size == (48, 48)
        assert close(image.convert("RGB").getpixel((5, 5)), inverted(rgb))
        assert "workflow" in image.info, "the editor's graph is embedded in the saved PNG"
    assert _open_dialogs(browser) == [], "a dialog opened after a successful queue"


def test_queue_on_gpu_shows_preflight_errors_on_the_node(
    page: tuple[ComfyStack, Browser],
) -> None:
    stack, browser = page
    value, _ = random_colour()
    graph = remote_invert(value, size=48)
    graph["5"] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["2", 0], "upscale_method": "nearest-exact", "width": 8, "height": 8,
            "crop": "disabled",
        },
    }  # fmt: skip
    graph["3"]["inputs"]["images"] = ["5", 0]
    _load_graph(browser, graph)
    # A value the frontend's combo cannot hold, so only the pre-flight can reject it.
    browser.evaluate(
        f"{APP}.graph.nodes.find(n => n.type === 'ImageScale')"
        ".widgets.find(w => w.name === 'upscale_method').value = 'no-such-method'"
    )
    before = stack.history_ids() | stack.queued_ids()
    _click_button(browser)
    # Through JSON: the app's store hands out proxies, which CDP would send as empty objects.
    errors = browser.wait_for(f"JSON.parse(JSON.stringify({APP}.lastNodeErrors))", 30)
    assert [node["class_type"] for node in errors.values()] == ["ImageScale"], errors
    assert "no-such-method" in json.dumps(errors)
    dialogs = browser.wait_for(
        "[...document.querySelectorAll('[role=dialog]')].map(d => d.innerText).join('\\n')", 10
    )
    assert "ImageScale" in dialogs, dialogs
    assert stack.history_ids() | stack.queued_ids() == before, "a rejected graph was queued"


def test_queue_on_gpu_names_node_types_the_gpu_lacks_and_their_pack(
    page: tuple[ComfyStack, Browser], tmp_path: Path
) -> None:
    """A type this ComfyUI has and the GPU catalogue lacks (one of this package's own nodes)."""
    stack, browser = page
    value, _ = random_colour()
    graph = remote_invert(value, size=48)
    graph["7"] = {
        "class_type": "ComfyBurstLoraFromURL",
        "inputs": {"url": "https://civitai.com/api/download/models/1", "strength_model": 1.0,
                   "strength_clip": 1.0},
    }  # fmt: skip
    _load_graph(browser, graph)
    before = stack.history_ids() | stack.queued_ids()
    _click_button(browser)
    errors = browser.wait_for(f"JSON.parse(JSON.stringify({APP}.lastNodeErrors))", 30)
    assert [node["class_type"] for node in errors.values()] == ["ComfyBurstLoraFromURL"], errors
    dialogs = browser.wait_for(
        "[...document.querySelectorAll('[role=dialog]')].map(d => d.innerText).join('\\n')", 10
    )
    assert "lacks node types" in dialogs, dialogs
    assert f"ComfyBurstLoraFromURL: from {stack.package_name}" in dialogs, dialogs
    print(f"screenshot: {browser.screenshot(tmp_path / 'comfyui-missing-node-types.png')}")
    assert stack.history_ids() | stack.queued_ids() == before, "a rejected graph was queued"
