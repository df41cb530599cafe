"""Take the screenshots of docs/FROM_COMFYUI.md: the real ComfyUI frontend, with the ComfyBurst
node loaded, in headless Chromium, sending jobs to a local cloud (its VMs run the ComfyUI
stand-in).

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \\
        .venv/bin/python -m tools.screenshots [--out docs/img] [--environments] \\
        [--front-end-root DIR]

COMFYUI_DIR is set up as for the `real_comfyui` tests (tests/_comfy_real_support.py: the node
linked into its custom_nodes/, `pip install ./functions/core` with its Python); Chromium from
`make browser-tools`. Each picture is clipped to what it shows and written as a palette PNG.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from tests._cdp import Browser, chromium_path
from tests._comfy_real_support import (
    BAD_UPSCALE_JS,
    LOCAL_PACK_TYPE,
    ComfyStack,
    remote_invert,
    skip_reason,
    start_stack,
    with_scale_node,
)

APP = "window.comfyAPI.app.app"
BUTTON = ".comfyburst-queue-on-gpu"  # wherever the frontend draws it
MAX_BYTES = 200_000
# Where the remote graph's colour comes from: a mid blue, so the inverted image is orange.
COLOUR = 0x3366CC


def _node_box(browser: Browser, margin: int = 24) -> dict[str, float]:
    """The page rectangle around every node of the graph (title bars included)."""
    box = browser.evaluate(
        f"""(() => {{
        const app = {APP}, ds = app.canvas.ds, rect = app.canvas.canvas.getBoundingClientRect();
        const title = LiteGraph.NODE_TITLE_HEIGHT;
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of app.graph.nodes) {{
            x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
            x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }}
        const [ax, ay] = ds.convertOffsetToCanvas([x0, y0]);
        const [bx, by] = ds.convertOffsetToCanvas([x1, y1]);
        return {{x: rect.x + ax, y: rect.y + ay, width: bx - ax, height: by - ay}};
        }})()"""
    )
    return {
        "x": max(0.0, box["x"] - margin),
        "y": max(0.0, box["y"] - margin),
        "width": box["width"] + 2 * margin,
        "height": box["height"] + 2 * margin,
    }


def _element_box(browser: Browser, selector: str, margin: int = 12) -> dict[str, float]:
    box = browser.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
        ".getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
    )
    return {
        "x": max(0.0, box["x"] - margin),
        "y": max(0.0, box["y"] - margin),
        "width": box["width"] + 2 * margin,
        "height": box["height"] + 2 * margin,
    }


def _union(*boxes: dict[str, float]) -> dict[str, float]:
    x0 = min(b["x"] for b in boxes)
    y0 = min(b["y"] for b in boxes)
    x1 = max(b["x"] + b["width"] for b in boxes)
    y1 = max(b["y"] + b["height"] for b in boxes)
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}


def _save(browser: Browser, clip: dict[str, float], path: Path) -> None:
    """The clipped page as a palette PNG under MAX_BYTES (scaled down if it must)."""
    data = browser.send("Page.captureScreenshot", clip={**clip, "scale": 1})["data"]
    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    while True:
        buffer = io.BytesIO()
        image.quantize(colors=128).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= MAX_BYTES:
            break
        smaller = (image.width * 4 // 5, image.height * 4 // 5)
        image = image.resize(smaller, Image.Resampling.LANCZOS)
    path.write_bytes(buffer.getvalue())
    print(f"{path}: {image.width}x{image.height}, {buffer.tell() // 1000} KB")


def _load(browser: Browser, graph: dict[str, Any]) -> None:
    browser.evaluate(f"{APP}.loadApiJson({json.dumps(graph)}, 'comfyburst.json')")
    browser.evaluate(f"{APP}.canvas.ds.scale = 1; {APP}.canvas.setDirty(true, true)")


def _dismiss(browser: Browser) -> None:
    for kind in ("keyDown", "keyUp"):
        browser.send("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape")
    browser.wait_for("document.querySelectorAll('[role=dialog]').length === 0", 10)


def _click_button(browser: Browser) -> None:
    """Click the button's centre once it has stopped moving and nothing covers it (a newer
    frontend lays its action bar out again after a graph loads: a click too early is Run's)."""
    box = _settled(browser, BUTTON)
    at = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    browser.wait_for(
        f"document.elementFromPoint({at['x']}, {at['y']})?.closest('{BUTTON}') ? 1 : 0", 30
    )
    browser.click(at["x"], at["y"])


def _dialog(browser: Browser) -> dict[str, float]:
    """The open dialog's rectangle, once its opening animation has ended."""
    browser.wait_for("!!document.querySelector('[role=dialog]')", 60)
    browser.wait_for("document.querySelector('[role=dialog]').innerText.length > 0", 10)
    return _settled(browser, "[role=dialog]")


def _settled(browser: Browser, selector: str) -> dict[str, float]:
    """The element's rectangle once its animation has ended: the same rectangle twice."""
    previous: dict[str, float] = {}
    while True:
        box = _element_box(browser, selector)
        if box == previous:
            return box
        previous = box
        time.sleep(0.2)


def _new_prompt(stack: ComfyStack, before: set[str], timeout_s: float = 60.0) -> str:
    """The prompt a click queued on this ComfyUI."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = (stack.history_ids() | stack.queued_ids()) - before
        if new:
            return new.pop()
        time.sleep(0.2)
    raise RuntimeError("the click queued nothing")


def queue_on_gpu(browser: Browser, stack: ComfyStack, out: Path) -> None:
    """The graph as composed locally, the Queue on GPU button, and the run it queued."""
    _load(browser, remote_invert(COLOUR, size=256))
    before = stack.history_ids()
    _click_button(browser)
    stack.wait_done(_new_prompt(stack, before))
    # From the top of the page: ComfyUI's own Run next to Queue on GPU, then the graph.
    nodes = _node_box(browser)
    width = browser.evaluate("window.innerWidth")
    clip = {"x": 0, "y": 0, "width": width, "height": nodes["y"] + nodes["height"]}
    _save(browser, clip, out / "queue-on-gpu.png")


def run_node(browser: Browser, stack: ComfyStack, out: Path) -> None:
    """Run workflow on GPU in a graph: the image it brought back previewed locally."""
    graph = {
        "run": {
            "class_type": "ComfyBurstRunWorkflow",
            "inputs": {"workflow": json.dumps(remote_invert(COLOUR, size=256)), "timeout_s": 240},
        },
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["run", 0]}},
    }
    _load(browser, graph)
    before = stack.history_ids()
    browser.evaluate(f"{APP}.queuePrompt(0, 1)")
    stack.wait_done(_new_prompt(stack, before))
    browser.wait_for(f"{APP}.graph.nodes.some(n => n.imgs?.length)", 30)
    browser.evaluate(f"{APP}.canvas.setDirty(true, true)")
    _save(browser, _node_box(browser), out / "run-workflow-on-gpu.png")


def missing_types(browser: Browser, stack: ComfyStack, out: Path) -> None:
    """A node type the GPU image lacks, named with its local pack, before any GPU starts."""
    graph = remote_invert(COLOUR, size=256)
    graph["5"] = {"class_type": LOCAL_PACK_TYPE, "inputs": {"image": ["2", 0], "radius": 2}}
    graph["3"]["inputs"]["images"] = ["5", 0]
    _load(browser, graph)
    _click_button(browser)
    _save(browser, _dialog(browser), out / "missing-node-types.png")
    _dismiss(browser)


def preflight_error(browser: Browser, stack: ComfyStack, out: Path) -> None:
    """An input the GPU side refuses, marked on its node (the pre-flight's verdict)."""
    graph = with_scale_node(remote_invert(COLOUR, size=256))
    _load(browser, graph)
    browser.evaluate(BAD_UPSCALE_JS)
    _click_button(browser)
    dialog = _dialog(browser)
    _save(browser, dialog, out / "preflight-error.png")
    _dismiss(browser)
    browser.evaluate(f"{APP}.canvas.setDirty(true, true)")
    _save(browser, _node_box(browser), out / "preflight-error-on-node.png")


SCENES: list[Callable[[Browser, ComfyStack, Path], None]] = [
    queue_on_gpu,
    run_node,
    missing_types,
    preflight_error,
]

# Environments open to the local pack's owner (its remote is never fetched: the local cloud's
# VMs have no base venv, so each build is refused before any clone, and fails).
ENVIRONMENT_SETTINGS = {"COMFYBURST_CUSTOM_NODE_SOURCES": "github.com/example-org"}
# A toast of the frontend's service: PrimeVue's (older frontends), its own store's (1.58).
TOAST = ".p-toast-message, [data-testid=toast]"


def _pack_graph() -> dict[str, Any]:
    graph = remote_invert(COLOUR, size=256)
    graph["5"] = {"class_type": LOCAL_PACK_TYPE, "inputs": {"image": ["2", 0], "radius": 2}}
    graph["3"]["inputs"]["images"] = ["5", 0]
    return graph


def _building_toast(browser: Browser, path: Path) -> None:
    """Queue the graph of a local pack; the toast that says its environment is being built."""
    _load(browser, _pack_graph())
    _click_button(browser)
    found = (
        f"[...document.querySelectorAll('{TOAST}')].find(t => /building the GPU/.test(t.innerText))"
    )
    browser.wait_for(f"!!{found}", 60)
    browser.evaluate(f"{found}.dataset.comfyburstShot = '1'")
    toast = _settled(browser, "[data-comfyburst-shot]")
    _save(browser, _union(toast, _element_box(browser, BUTTON)), path)


def building_environment(browser: Browser, stack: ComfyStack, out: Path) -> None:
    """A node type from a local pack: the GPU environment of that pack is asked for, and the
    page says it is being built; then the build's failure, on the run node."""
    _building_toast(browser, out / "building-environment.png")
    browser.evaluate(f"{APP}.extensionManager?.toast?.removeAll?.()")
    # A VM starts, claims the build, refuses it; the run node sees it failed within its poll.
    browser.wait_for("!!document.querySelector('[role=dialog]')", 300)
    _save(browser, _dialog(browser), out / "environment-failed.png")
    _dismiss(browser)


def building_environment_other_frontend(browser: Browser, stack: ComfyStack, out: Path) -> None:
    """The same notice on another frontend (--front-end-root), named with its version."""
    version = browser.evaluate("window.__COMFYUI_FRONTEND_VERSION__")
    _building_toast(browser, out / f"building-environment-frontend-{version}.png")


ENVIRONMENT_SCENES: list[Callable[[Browser, ComfyStack, Path], None]] = [building_environment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument(
        "--environments",
        action="store_true",
        help="the custom-node environment pictures (a cloud with environments open) instead",
    )
    parser.add_argument(
        "--front-end-root",
        default="",
        help="another frontend's static folder: only its environment notice is taken",
    )
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    binary = chromium_path()
    if binary is None:
        print("error: no Chromium (make browser-tools)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cleanups: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="comfyburst-shots-") as tmp:
        try:
            other = bool(args.front_end_root)
            settings = ENVIRONMENT_SETTINGS if args.environments or other else None
            stack = start_stack(Path(tmp), cleanups.append, settings, args.front_end_root)
            (Path(tmp) / "profile").mkdir()
            browser = Browser(binary, Path(tmp) / "profile")
            cleanups.append(browser.close)
            browser.send("Page.navigate", url=stack.url)
            browser.wait_for(f"!!document.querySelector('{BUTTON}') && !!{APP}?.graph", 120)
            scenes = ENVIRONMENT_SCENES if args.environments else SCENES
            for scene in [building_environment_other_frontend] if other else scenes:
                scene(browser, stack, args.out)
        finally:
            for cleanup in reversed(cleanups):
                cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
