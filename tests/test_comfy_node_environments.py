"""The node builds the GPU environment of the custom nodes a workflow needs (issue #24): the
packs of its missing node types (local git checkouts) asked for with `POST /environments`,
waited for, then named by the job. Against the API of functions/main.py on the emulators,
served over loopback, and the node's real `/comfyburst/queue` route on the stand-in page's
server (tests/_node_page.py). The build on a VM: tests/test_environments_run_e2e.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from comfy_node import _comfy, environments
from comfy_node._vendor.comfyburst_core.client import ApiClient, ClientSettings
from comfy_node._vendor.comfyburst_core.custom_nodes import read_pack
from comfy_node.environments import (
    BUILDING,
    EnvironmentRefused,
    EnvironmentWaitCancelled,
    pack_text,
    packs_for,
    wait_ready,
)
from comfy_node.remote import RemoteJobError, run_job
from comfyburst.domain.environments import finish_build
from tests.test_api_emulator import settings, standin  # noqa: F401  (module fixtures)
from tests.test_custom_nodes import make_pack
from tests.test_environments_api import (  # noqa: F401  (fixtures)
    KEYS,
    Cloud,
    _documents,
    _set_state,
    cloud,
    off_cloud,
)
from tests.test_registry_packs import _registry_install

PACK_TYPE = "CbPackInvert"
ALLOWED = "https://github.com/someone/ComfyUI-Invert"  # the cloud fixture allows github.com


def mark_built(cloud: Cloud, env_id: str) -> None:  # noqa: F811
    """What the build job's completion records: ready, with the pack's `/object_info`."""
    entry = {
        "input": {"required": {"image": ["IMAGE"]}},
        "input_order": {"required": ["image"]},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": PACK_TYPE,
        "display_name": PACK_TYPE,
        "description": "",
        "python_module": "custom_nodes.ComfyUI-Invert",
        "category": "image",
        "output_node": False,
    }
    store = cloud.deps.environments
    assert store is not None
    built = store.update(
        env_id,
        lambda env: finish_build(
            env,
            datetime.now(UTC),
            node_types=[PACK_TYPE],
            archive=f"gs://models/environments/{env_id}/layer.tar.gz",
            object_info_json=json.dumps({PACK_TYPE: entry}),
        ),
    )
    assert built is not None and built.state == "ready"


def graph() -> dict[str, Any]:
    """EmptyImage → a node type of a local pack → SaveImage."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": PACK_TYPE, "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }


# --- which packs, as the environment names them (no API) ---------------------------------


def test_a_pack_is_named_by_its_https_remote_and_commit(tmp_path: Path) -> None:
    commit = make_pack(tmp_path / "ssh", remote="git@github.com:someone/ComfyUI-Invert.git")
    assert pack_text(read_pack(tmp_path / "ssh")) == f"{ALLOWED}.git@{commit}"
    commit = make_pack(tmp_path / "https", remote=ALLOWED)
    pack = read_pack(tmp_path / "https")
    # Two node types of one pack: the pack once.
    assert packs_for(["A", "B"], lambda t: pack) == [f"{ALLOWED}@{commit}"]


def test_a_registry_install_is_named_by_its_id_and_version(tmp_path: Path) -> None:
    # What ComfyUI-Manager leaves for a registry pack: no .git, `.tracking`, pyproject.toml.
    pack = _registry_install(tmp_path / "comfyui-kjnodes")
    assert pack_text(read_pack(pack)) == "comfyui-kjnodes@1.0.5"


def test_a_pack_the_gpu_could_not_build_is_refused_with_the_reason(tmp_path: Path) -> None:
    plain = tmp_path / "NotGit"
    plain.mkdir()
    make_pack(tmp_path / "NoRemote", remote=None)
    make_pack(tmp_path / "Changed", remote=ALLOWED)
    (tmp_path / "Changed" / "__init__.py").write_text("# edited here\n")
    for folder, words in [
        (plain, "is not a git checkout"),
        (tmp_path / "NoRemote", "is not a git checkout"),
        (tmp_path / "Changed", "would not be on the GPU"),
    ]:
        with pytest.raises(EnvironmentRefused, match=words):
            pack_text(read_pack(folder))
    with pytest.raises(EnvironmentRefused, match="Other is not from a custom-node pack"):
        packs_for(["Other"], lambda t: None)


# --- the node's server-side flow against the API ------------------------------------------


@pytest.fixture
def api_url(cloud: Cloud) -> Iterator[str]:  # noqa: F811
    """The app of functions/main.py on 127.0.0.1, so the node's real client reaches it."""
    yield from _serve(cloud)


def _serve(cloud: Cloud) -> Iterator[str]:  # noqa: F811
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, cloud.client.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _client(api_url: str, who: str = "ana") -> ApiClient:
    return ApiClient(ClientSettings(api_url=api_url, auth="api_key", api_key=KEYS[who]))


class Page:
    """The node's route on the stand-in page's server, as ana; the pack folder per type."""

    def __init__(self, api_url: str, folders: dict[str, Path]) -> None:
        from tests._node_page import NodePage

        self.patch = pytest.MonkeyPatch()
        for name, value in [("API_URL", api_url), ("AUTH", "api_key"), ("API_KEY", KEYS["ana"])]:
            self.patch.setenv(f"COMFYBURST_{name}", value)
        self.node_page = NodePage(self.patch, folders.get)

    def queue(self, prompt: dict[str, Any]) -> requests.Response:
        url = f"{self.node_page.url}/api/comfyburst/queue"
        return requests.post(url, json={"prompt": prompt, "client_id": "c"}, timeout=60)

    def close(self) -> None:
        self.node_page.close()
        self.patch.undo()


@pytest.fixture
def page_for(request: pytest.FixtureRequest) -> Iterator[Any]:
    pages: list[Page] = []

    def make(api_url: str, folders: dict[str, Path]) -> Page:
        pages.append(Page(api_url, folders))
        return pages[-1]

    yield make
    for page in pages:
        page.close()


@pytest.mark.emulator
def test_queue_on_gpu_asks_for_the_environment_and_queues_the_job_in_it(
    cloud: Cloud,  # noqa: F811
    api_url: str,
    page_for: Any,
    tmp_path: Path,
) -> None:
    commit = make_pack(tmp_path / "ComfyUI-Invert", remote=ALLOWED)
    page = page_for(api_url, {PACK_TYPE: tmp_path / "ComfyUI-Invert"})
    answer = page.queue(graph())
    assert answer.status_code == 200, answer.text
    told = answer.json()["comfyburst_environment"]
    assert told["state"] == "building" and told["packs"] == [f"{ALLOWED}@{commit}"]
    assert told["message"].startswith(BUILDING) and "ComfyUI-Invert" in told["message"]
    env = _client(api_url).get_environment(told["id"])
    assert env["packs"] == [f"{ALLOWED}@{commit}"] and env["state"] == "building"
    (queued,) = page.node_page.queued
    run = queued["prompt"]["comfyburst_run"]["inputs"]
    assert run["environment"] == told["id"] and json.loads(run["workflow"]) == graph()
    # Its build failed (as the build job's end records): the next click is refused with why.
    _set_state(cloud, told["id"], "failed", "ComfyUI-Invert: pip: no matching distribution")
    refused = page.queue(graph())
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert "no matching distribution" in body["error"]["details"]
    assert "lacks node types" in body["error"]["message"]
    assert list(body["node_errors"]) == ["2"]
    assert len(page.node_page.queued) == 1, "a graph whose environment failed was queued"


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("environments_disabled", "builds no custom-node environments"),
        ("pack_not_allowed", "add its source to custom_node_sources"),
        ("registry_not_configured", "set custom_node_registry_url"),
        ("environment_limit_reached", "refused the environment of x@1 (403"),
    ],
)
def test_each_refusal_of_an_environment_tells_the_user_what_to_ask_for(
    code: str, words: str
) -> None:
    from comfy_node._vendor.comfyburst_core.client import ApiError

    error = ApiError(403, {"error": {"code": code, "message": "the API's reason"}})
    told = str(environments._refusal(error, ["x@1"]))
    assert words in told, told
    if code != "environments_disabled":
        assert "the API's reason" in told


@pytest.mark.emulator
@pytest.mark.parametrize(
    ("remote", "words"),
    [
        (None, "is not a git checkout"),
        ("https://gitlab.com/someone/ComfyUI-Invert", "does not allow this pack"),
    ],
)
def test_queue_on_gpu_refuses_a_pack_it_cannot_build_and_writes_nothing(
    cloud: Cloud,  # noqa: F811
    api_url: str,
    page_for: Any,
    tmp_path: Path,
    remote: str | None,
    words: str,
) -> None:
    make_pack(tmp_path / "ComfyUI-Invert", remote=remote)
    page = page_for(api_url, {PACK_TYPE: tmp_path / "ComfyUI-Invert"})
    answer = page.queue(graph())
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert words in body["error"]["details"], body
    assert body["node_errors"]["2"]["class_type"] == PACK_TYPE
    assert page.node_page.queued == [] and _documents(cloud) == []


@pytest.mark.emulator
def test_queue_on_gpu_says_when_the_deployment_builds_no_environments(
    off_cloud: Cloud,  # noqa: F811
    page_for: Any,
    tmp_path: Path,
) -> None:
    make_pack(tmp_path / "ComfyUI-Invert", remote=ALLOWED)
    for api_url in _serve(off_cloud):
        page = page_for(api_url, {PACK_TYPE: tmp_path / "ComfyUI-Invert"})
        answer = page.queue(graph())
        assert answer.status_code == 400, answer.text
        details = answer.json()["error"]["details"]
        assert "builds no custom-node environments" in details
        assert "gpu_image/custom_nodes.txt" in details
        assert page.node_page.queued == [] and _documents(off_cloud) == []


@pytest.mark.emulator
def test_the_run_node_waits_for_the_build_then_submits_in_the_environment(
    cloud: Cloud,  # noqa: F811
    api_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Used directly (no environment named), the node asks for its packs' environment, tells
    how the build goes, and submits once it is ready."""
    commit = make_pack(tmp_path / "ComfyUI-Invert", remote=ALLOWED)
    monkeypatch.setattr(_comfy, "node_pack_folder", {PACK_TYPE: tmp_path / "ComfyUI-Invert"}.get)
    monkeypatch.setattr(environments, "POLL_S", 0.01)
    client = _client(api_url)
    statuses: list[str] = []

    def on_status(text: str) -> None:
        statuses.append(text)
        # The build ends (as its job's completion records) while the node waits.
        (env,) = client.list_environments()["environments"]
        if env["state"] == "building":
            mark_built(cloud, env["id"])

    class Submitted(Exception):
        """The job is in; following it needs a VM, which this test has none of."""

    def follow(job_id: str, **options: Any) -> dict[str, Any]:
        raise Submitted(job_id)

    monkeypatch.setattr(client, "wait", follow)
    with pytest.raises(Submitted) as submitted:
        run_job(client, {"workflow": graph()}, is_image=lambda name: True, on_status=on_status)
    assert statuses and statuses[0].startswith(BUILDING)
    job = client.get(str(submitted.value))
    env = client.get_environment(job["options"]["environment"])
    assert env["packs"] == [f"{ALLOWED}@{commit}"] and env["state"] == "ready"


@pytest.mark.emulator
def test_a_failed_build_or_cancel_submits_no_job(
    cloud: Cloud,  # noqa: F811
    api_url: str,
) -> None:
    client = _client(api_url)
    env = client.create_environment([f"{ALLOWED}@{'1' * 40}"])
    seen: list[str] = []
    with pytest.raises(EnvironmentWaitCancelled, match="the build goes on"):
        wait_ready(client, env["id"], on_status=seen.append, interrupted=lambda: bool(seen))
    _set_state(cloud, env["id"], "failed", "ComfyUI-Invert: ImportError: no module named x")
    request = {"workflow": graph(), "options": {"environment": env["id"]}}
    with pytest.raises(RemoteJobError, match="failed to build: ComfyUI-Invert: ImportError"):
        run_job(client, request, is_image=lambda name: True)
    assert all(job.environment_build is not None for job in cloud.jobs())


# --- the run node's input and its status line to the browser (no API) ----------------------


def test_the_run_node_names_the_environment_it_is_given() -> None:
    from comfy_node.nodes import ComfyBurstRunWorkflow

    node = ComfyBurstRunWorkflow()
    assert "environment" in node.INPUT_TYPES()["optional"]
    env_id = "env-" + "a" * 64
    request = node.build_request(json.dumps(graph()), environment=f" {env_id} ")
    assert request["options"]["environment"] == env_id
    assert "environment" not in node.build_request(json.dumps(graph()))["options"]


def test_status_lines_go_to_the_browser_that_queued_the_prompt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, Any, Any]] = []
    server = SimpleNamespace(
        client_id=None, send_sync=lambda event, data, sid: sent.append((event, data, sid))
    )
    monkeypatch.setattr(_comfy, "prompt_server", lambda: server)
    report = _comfy.status_reporter()
    report("not sent: no browser queued this prompt")
    server.client_id = "browser-1"
    report(f"{BUILDING}: ComfyUI-Invert")
    assert sent == [(_comfy.STATUS_EVENT, {"message": f"{BUILDING}: ComfyUI-Invert"}, "browser-1")]
    monkeypatch.setattr(_comfy, "prompt_server", lambda: None)
    _comfy.status_reporter()("outside ComfyUI: nowhere to send")
