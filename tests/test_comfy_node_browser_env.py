"""The "Queue on GPU" button on a graph with a custom node the GPU image lacks, in headless
Chromium on the stand-in page (tests/_node_page.py), with environments open on the API of
functions/main.py (emulators, loopback): the page says the GPU environment is being built, the
environment of the node's local pack is asked for, and the graph is queued to run in it. The
build itself runs on a VM in tests/test_environments_run_e2e.py; the run node's wait for it in
tests/test_comfy_node_environments.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_node.environments import BUILDING
from tests._cdp import chromium_path
from tests.test_api_emulator import settings, standin  # noqa: F401  (module fixtures)
from tests.test_comfy_node_browser import _click_button, _load_graph, _open_page
from tests.test_comfy_node_environments import (  # noqa: F401  (fixtures)
    ALLOWED,
    PACK_TYPE,
    Page,
    _client,
    api_url,
    graph,
)
from tests.test_custom_nodes import make_pack
from tests.test_environments_api import Cloud, cloud  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.emulator,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        chromium_path() is None, reason="no Chromium (`make browser-tools` installs it)"
    ),
]

STATUS = "#comfyburst-status"


@pytest.fixture
def page(api_url: str, tmp_path: Path) -> Iterator[tuple[Page, str]]:  # noqa: F811
    commit = make_pack(tmp_path / "packs" / "ComfyUI-Invert", remote=ALLOWED)
    opened = Page(api_url, {PACK_TYPE: tmp_path / "packs" / "ComfyUI-Invert"})
    try:
        yield opened, commit
    finally:
        opened.close()


def test_queue_on_gpu_builds_the_environment_of_the_graphs_custom_nodes(
    cloud: Cloud,  # noqa: F811
    api_url: str,  # noqa: F811
    page: tuple[Page, str],
    tmp_path: Path,
) -> None:
    opened, commit = page
    browser = _open_page(opened.node_page.url, tmp_path / "profile")
    try:
        _load_graph(browser, graph())
        _click_button(browser)
        told = str(browser.wait_for(f"document.querySelector('{STATUS}')?.innerText", 30))
        print(f"screenshot: {browser.screenshot(tmp_path / 'building-environment.png')}")
        dialogs = browser.evaluate("document.querySelectorAll('[role=dialog]').length")
    finally:
        browser.close()
    assert BUILDING in told and "ComfyUI-Invert" in told, told
    assert dialogs == 0, "a refusal was shown"
    (queued,) = opened.node_page.queued
    run: dict[str, Any] = queued["prompt"]["comfyburst_run"]["inputs"]
    env = _client(api_url).get_environment(run["environment"])
    assert env["packs"] == [f"{ALLOWED}@{commit}"] and env["state"] == "building"
    assert json.loads(run["workflow"])["2"]["class_type"] == PACK_TYPE
