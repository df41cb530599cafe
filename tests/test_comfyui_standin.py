"""The ComfyUI stand-in replays the real server's transcripts (tests/test_data/comfyui_api/)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from localcloud.comfyui_standin import StandinServer

DATA = Path(__file__).parent / "test_data" / "comfyui_api"
REPO = Path(__file__).resolve().parent.parent
WS_TIMEOUT_S = 10
HTTP_TIMEOUT_S = 10
# ImageBlur takes 60 s in 600 progress steps: long enough to act on, interrupted by every test.
SLOW_BLUR = {"slow_node_class": "ImageBlur", "slow_node_s": 60, "sampler_steps": 600}


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def transcript_types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["json"]["type"] for m in messages if "json" in m]


def prompt_of(name: str, key: str | None = None) -> dict[str, Any]:
    """The `POST /prompt` JSON body of a transcript."""
    data = load(name)
    return (data[key] if key else data)["request"]["json"]


class Client:
    """A websocket plus HTTP client of one stand-in, as a worker would drive it."""

    def __init__(self, base: str, client_id: str) -> None:
        self.base, self.client_id = base, client_id
        self.ws = websocket.create_connection(
            f"{base.replace('http', 'ws', 1)}/ws?clientId={client_id}", timeout=WS_TIMEOUT_S
        )
        self.hello = self.recv()

    def recv(self) -> dict[str, Any]:
        return json.loads(self.ws.recv())

    def post(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.base}/prompt", json=body, timeout=HTTP_TIMEOUT_S)

    def submit(self, body: dict[str, Any]) -> str:
        response = self.post({**body, "client_id": self.client_id})
        assert response.status_code == 200, response.text
        return response.json()["prompt_id"]

    def until_done(self, prompt_id: str) -> list[dict[str, Any]]:
        """Messages up to and including `executing {node: null}` of the prompt."""
        messages = []
        while True:
            message = self.recv()
            messages.append(message)
            data = message["data"]
            if message["type"] == "executing" and data == {"node": None, "prompt_id": prompt_id}:
                return messages

    def run(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        prompt_id = self.submit(body)
        return prompt_id, self.until_done(prompt_id)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.base}{path}", timeout=HTTP_TIMEOUT_S)

    def history(self, prompt_id: str) -> dict[str, Any]:
        return self.get(f"/history/{prompt_id}").json()[prompt_id]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinServer]:
    server = StandinServer(tmp_path / "input", tmp_path / "output", tmp_path / "temp")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(standin: StandinServer) -> Iterator[Client]:
    worker = Client(standin.base_url, "worker-capture-1")
    yield worker
    worker.ws.close()


def set_faults(base: str, faults: dict[str, Any]) -> None:
    response = requests.post(f"{base}/_standin/faults", json=faults, timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 200, response.text


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


def blur_prompt(color: int) -> dict[str, Any]:
    """The slow prompt of queue_interrupt.json (64 px here; the fault makes it slow)."""
    prompt = load("queue_interrupt.json")["post_prompts"][0]["request"]["json"]["prompt"]
    prompt = json.loads(json.dumps(prompt))
    prompt["1"]["inputs"].update(width=64, height=64, color=color)
    return {"prompt": prompt}


def test_hello_and_system_stats_name_the_stand_in(client: Client) -> None:
    assert client.hello == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "worker-capture-1"},
    }
    stats = client.get("/system_stats").json()
    assert "STAND-IN" in stats["system"]["standin"]
    assert "standin" in stats["system"]["comfyui_version"]
    assert set(stats) == set(load("system_stats.json")["response"]["json"])


def test_success_run_replays_transcript(client: Client, standin: StandinServer) -> None:
    real = load("ws_success_run.json")["messages"]
    _, messages = client.run(prompt_of("prompt_success.json"))
    assert types(messages) == transcript_types(real)
    for ours, theirs in zip(messages, real, strict=True):
        assert set(ours["data"]) == set(theirs["json"]["data"]), ours["type"]
        if ours["type"] in ("executing", "executed"):
            assert ours["data"]["node"] == theirs["json"]["data"]["node"]
        if ours["type"] == "progress_state":
            states = {k: v["state"] for k, v in ours["data"]["nodes"].items()}
            real_states = {k: v["state"] for k, v in theirs["json"]["data"]["nodes"].items()}
            assert states == real_states
    executed = next(m for m in messages if m["type"] == "executed")
    real_executed = next(m["json"] for m in real if m["json"]["type"] == "executed")
    assert executed["data"]["output"] == real_executed["data"]["output"]
    assert (standin.dirs.output / "api_capture" / "ok_00001_.png").is_file()


def _shape(value: Any) -> Any:
    """Keys and types, with ids and timestamps left out."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("prompt_id", "timestamp")}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_history_matches_transcript_shape(client: Client) -> None:
    prompt_id, _ = client.run(prompt_of("prompt_success.json"))
    ours = client.history(prompt_id)
    (theirs,) = load("history_success.json")["response"]["json"].values()
    assert _shape(ours) == _shape(theirs)
    assert ours["prompt"][2:] == theirs["prompt"][2:]
    assert ours["outputs"] == theirs["outputs"]
    assert ours["meta"] == theirs["meta"]


def test_view_serves_the_inverted_png(client: Client) -> None:
    client.run(prompt_of("prompt_success.json"))
    response = client.get("/view?filename=ok_00001_.png&subfolder=api_capture&type=output")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    ours = Image.open(io.BytesIO(response.content))
    real = Image.open(DATA / "view_output.png")
    assert (ours.size, ours.mode) == (real.size, real.mode) == ((64, 64), "RGB")
    assert ours.tobytes() == real.tobytes()  # black inverted: all white
    body = prompt_of("ws_error_run.json", "post_prompt")
    body["prompt"]["3"]["inputs"]["filename_prefix"] = "api_capture/seven"
    client.run(body)
    seven = client.get("/api/view?filename=seven_00001_.png&subfolder=api_capture&type=output")
    assert Image.open(io.BytesIO(seven.content)).getpixel((5, 5)) == (255, 255, 248)


@pytest.mark.parametrize(
    ("case", "query"),
    [
        ("missing_file", "filename=nope.png&type=output"),
        ("wrong_subfolder", "filename=ok_00001_.png&type=output"),
        ("path_traversal", "filename=../../etc/passwd&type=output"),
    ],
)
def test_view_errors_match_transcript(client: Client, case: str, query: str) -> None:
    client.run(prompt_of("prompt_success.json"))
    expected = load("view.json")[case]["response"]["status"]
    assert client.get(f"/view?{query}").status_code == expected


def _upload(base: str, data: bytes, **fields: str) -> requests.Response:
    files = {"image": ("upload_test.png", data, "image/png")}
    return requests.post(f"{base}/upload/image", files=files, data=fields, timeout=HTTP_TIMEOUT_S)


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, "PNG")
    return buffer.getvalue()


def test_upload_dedupes_renames_and_feeds_load_image(client: Client) -> None:
    real = load("upload_image.json")
    base, red, blue = client.base, _png((255, 0, 0)), _png((0, 0, 255))
    cases = [
        ("first", _upload(base, red)),
        ("same_name_same_bytes", _upload(base, red)),
        ("same_name_different_bytes", _upload(base, blue)),
        ("overwrite_true", _upload(base, blue, overwrite="true")),
        ("subfolder", _upload(base, red, subfolder="jobs/abc")),
        ("type_temp", _upload(base, red, type="temp")),
    ]
    for name, response in cases:
        assert response.status_code == 200, name
        assert response.json() == real[name]["response"]["json"], name
    missing = requests.post(f"{base}/upload/image", data={"x": "1"}, timeout=HTTP_TIMEOUT_S)
    assert missing.status_code == real["no_image_field"]["response"]["status"] == 400
    load_image = client.get("/object_info/LoadImage").json()
    assert load_image == real["object_info_LoadImage_after"]
    for key in ("loadimage_run", "loadimage_annotated_temp"):
        body = real[key]["post_prompt"]["request"]["json"] if key == "loadimage_run" else None
        body = body or real[key]["request"]["json"]
        prompt_id, messages = client.run(body)
        assert messages[-3]["type"] == "execution_success", messages
        (image,) = client.history(prompt_id)["outputs"]["3"]["images"]
        view = client.get(f"/view?filename={image['filename']}&subfolder=api_capture&type=output")
        assert Image.open(io.BytesIO(view.content)).getpixel((0, 0)) == (0, 255, 255)


def test_interrupt_mid_slow_node(client: Client) -> None:
    set_faults(
        client.base, {"slow_node_class": "ImageBlur", "slow_node_s": 60, "sampler_steps": 600}
    )
    prompt_id = client.submit(blur_prompt(101))
    messages = [client.recv()]
    while messages[-1]["type"] != "progress":
        messages.append(client.recv())
    assert messages[-1]["data"] == {"value": 1, "max": 600, "prompt_id": prompt_id, "node": "10"}
    requests.post(f"{client.base}/interrupt", json={"prompt_id": "someone-else"}, timeout=5)
    messages.append(client.recv())
    while messages[-1]["type"] != "progress":
        messages.append(client.recv())
    assert messages[-1]["data"]["value"] > 1  # interrupting another prompt id is a no-op
    requests.post(f"{client.base}/interrupt", json={"prompt_id": prompt_id}, timeout=5)
    messages += client.until_done(prompt_id)
    assert types(messages[-3:]) == ["execution_interrupted", "status", "executing"]
    stop = messages[-3]["data"]
    real = load("ws_interrupt_run.json")["messages"]
    real_stop = next(
        m["json"]["data"] for m in real if m["json"]["type"] == "execution_interrupted"
    )
    assert set(stop) == set(real_stop)
    assert (stop["node_id"], stop["node_type"], stop["executed"]) == ("10", "ImageBlur", ["1"])
    history = client.history(prompt_id)
    assert history["status"]["status_str"] == "error"
    assert history["status"]["completed"] is False
    assert history["status"]["messages"][-1][0] == "execution_interrupted"


def test_queue_front_delete_clear_and_global_interrupt(client: Client) -> None:
    set_faults(
        client.base, {"slow_node_class": "ImageBlur", "slow_node_s": 60, "sampler_steps": 600}
    )
    first = client.submit(blur_prompt(101))
    while client.recv()["type"] != "progress":
        pass
    second = client.submit(blur_prompt(102))
    third = client.submit(blur_prompt(103))
    front = client.post({**blur_prompt(104), "client_id": client.client_id, "front": True}).json()
    assert front["number"] < 0
    pending = [item[1] for item in client.get("/queue").json()["queue_pending"]]
    assert sorted(pending) == sorted([second, third, front["prompt_id"]])
    assert requests.post(f"{client.base}/queue", json={"delete": [second]}, timeout=5).ok
    assert client.get("/prompt").json() == {"exec_info": {"queue_remaining": 3}}
    requests.post(f"{client.base}/interrupt", timeout=5)
    client.until_done(first)
    started = client.recv()
    while started["type"] != "execution_start":
        started = client.recv()
    assert started["data"]["prompt_id"] == front["prompt_id"]
    assert requests.post(f"{client.base}/queue", json={"clear": True}, timeout=5).ok
    assert client.get("/queue").json()["queue_pending"] == []
    requests.post(f"{client.base}/interrupt", timeout=5)
    client.until_done(front["prompt_id"])
    assert client.get("/history/" + second).json() == {}
    assert client.get("/history/" + third).json() == {}
    assert client.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_injected_execution_error_has_real_fields(client: Client) -> None:
    set_faults(client.base, {"execution_error": {"class_type": "ImageInvert", "message": "boom"}})
    prompt_id, messages = client.run(prompt_of("prompt_success.json"))
    assert types(messages[-3:]) == ["execution_error", "status", "executing"]
    error = messages[-3]["data"]
    real = load("ws_error_run.json")["messages"]
    real_error = next(m["json"]["data"] for m in real if m["json"]["type"] == "execution_error")
    assert set(error) == set(real_error)
    assert (error["node_id"], error["node_type"], error["executed"]) == ("2", "ImageInvert", ["1"])
    assert (error["exception_message"], error["exception_type"]) == ("boom\n", "RuntimeError")
    assert client.history(prompt_id)["status"]["messages"][-1] == ["execution_error", error]


def test_save_outside_output_dir_fails_at_run_time(client: Client) -> None:
    real = load("ws_error_run.json")
    body = real["post_prompt"]["request"]["json"]
    response = client.post(body)
    assert response.status_code == 200 and response.json()["node_errors"] == {}
    messages = client.until_done(response.json()["prompt_id"])
    assert types(messages) == transcript_types(real["messages"])
    error = messages[-3]["data"]
    assert set(error["current_inputs"]) == {"images", "filename_prefix", "prompt", "extra_pnginfo"}
    assert error["current_inputs"]["filename_prefix"] == ["../../escape_attempt"]
    assert "outside the output folder" in error["exception_message"]
    (entry,) = load("history_error.json")["response"]["json"].values()
    assert _shape(client.history(response.json()["prompt_id"])) == _shape(entry)


def test_dropped_websocket_once_per_client(client: Client) -> None:
    set_faults(client.base, {"drop_ws_after_messages": 4})
    prompt_id = client.submit(prompt_of("prompt_success.json"))
    received = []
    while raw := client.ws.recv():  # websocket-client returns "" on the server's close
        received.append(json.loads(raw))
    assert not client.ws.connected
    assert len(received) == 3  # the hello was the first of the four
    again = Client(client.base, client.client_id)
    try:
        history: dict[str, Any] = {}
        while not history:  # readiness by polling, as a worker would after a drop
            history = again.get(f"/history/{prompt_id}").json()
        assert history[prompt_id]["status"]["status_str"] == "success"
        _, messages = again.run(blur_prompt(5))
        assert len(messages) > 4  # not dropped a second time
    finally:
        again.ws.close()


def test_cached_reruns_replay_transcript(client: Client, standin: StandinServer) -> None:
    real = load("ws_cached_runs.json")
    client.run(prompt_of("prompt_success.json"))
    files_before = sorted(standin.dirs.output.rglob("*.png"))
    body = real["fully_cached"]["request_response"]["request"]["json"]
    prompt_id, messages = client.run(body)
    assert prompt_id == "my-own-prompt-id-0001"
    assert types(messages) == transcript_types(real["fully_cached"]["messages"])
    assert messages[3]["data"]["nodes"] == ["1", "2", "3"]
    assert messages[4]["data"]["output"]["images"][0]["filename"] == "ok_00001_.png"
    assert sorted(standin.dirs.output.rglob("*.png")) == files_before
    assert _shape(client.history(prompt_id)) == _shape(real["history_fully_cached"][prompt_id])
    body = real["partially_cached"]["request_response"]["request"]["json"]
    _, messages = client.run(body)
    assert types(messages) == transcript_types(real["partially_cached"]["messages"])
    assert messages[3]["data"]["nodes"] == ["1", "2"]


def test_without_client_id_only_status_and_progress_state(client: Client) -> None:
    real = load("ws_no_client_id_run.json")
    response = client.post(real["post_prompt"]["request"]["json"])
    prompt_id = response.json()["prompt_id"]
    history: dict[str, Any] = {}
    while not history:
        history = client.get(f"/history/{prompt_id}").json()
    received = [client.recv() for _ in real["worker_socket_messages"]]
    assert types(received) == transcript_types(real["worker_socket_messages"])


def test_feature_flags_answered(standin: StandinServer) -> None:
    real = load("ws_feature_flags.json")["messages"]
    ws = websocket.create_connection(
        f"{standin.base_url.replace('http', 'ws', 1)}/ws?clientId=flags-client",
        timeout=WS_TIMEOUT_S,
    )
    try:
        ws.send(json.dumps(real[0]["json"]))
        assert json.loads(ws.recv()) == real[1]["json"]
        assert json.loads(ws.recv()) == real[2]["json"]
    finally:
        ws.close()


@pytest.mark.parametrize(
    "path",
    ["/queue", "/prompt", "/features", "/object_info/EmptyImage", "/object_info/NoSuchNode",
     "/api/queue", "/history", "/history/00000000-no-such-id", "/embeddings"],
)  # fmt: skip
def test_gets_match_transcript(standin: StandinServer, path: str) -> None:
    real = load("misc_gets.json")[path]["response"]
    response = requests.get(standin.base_url + path, timeout=HTTP_TIMEOUT_S)
    assert response.status_code == real["status"]
    assert response.headers["Content-Type"] == real["headers"]["Content-Type"]
    assert response.json() == real["json"]


def test_api_prefix_and_admin_routes(client: Client) -> None:
    assert client.get("/api/object_info").json() == client.get("/object_info").json()
    assert client.get("/api/models").json() == load("misc_gets.json")["/models"]["response"]["json"]
    bad = requests.post(f"{client.base}/_standin/faults", json={"sampler_steps": -1}, timeout=5)
    assert bad.status_code == 400
    set_faults(client.base, {"drop_ws_after_messages": 9})
    assert client.get("/_standin/faults").json()["drop_ws_after_messages"] == 9
    requests.delete(f"{client.base}/_standin/faults", timeout=5)
    assert client.get("/_standin/faults").json()["drop_ws_after_messages"] is None


def test_history_max_items_delete_and_free(client: Client) -> None:
    ids = [client.run(blur_prompt(color))[0] for color in (1, 2, 3)]
    assert list(client.get("/history?max_items=2").json()) == ids[1:]
    requests.post(f"{client.base}/history", json={"delete": [ids[1]]}, timeout=5)
    assert client.get(f"/history/{ids[1]}").json() == {}
    assert requests.post(f"{client.base}/free", json={"free_memory": True}, timeout=5).ok
    _, messages = client.run(blur_prompt(3))
    assert messages[3]["type"] == "execution_cached" and messages[3]["data"]["nodes"] == []


def _implemented(case: dict[str, Any], classes: set[str]) -> bool:
    body = case["request"].get("json")
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(prompt, dict):
        return True
    names = {n.get("class_type") for n in prompt.values()} - {"NoSuchNodeType", None}
    return names <= classes


def _error_types(body: dict[str, Any]) -> Any:
    node_errors = {
        node: sorted(e["type"] for e in entry["errors"])
        for node, entry in body.get("node_errors", {}).items()
    }
    return body.get("error", {}).get("type"), node_errors


def test_prompt_errors_match_real_server(client: Client) -> None:
    classes = set(client.get("/object_info").json())
    _upload(client.base, _png((1, 2, 3)))  # some input file exists, just not the one asked for
    cases = {k: v for k, v in load("prompt_errors.json").items() if _implemented(v, classes)}
    assert len(cases) == 20 and "missing_checkpoint_file" in cases
    for name, case in cases.items():
        request, real = case["request"], case["response"]
        if "raw_body" in request:
            response = requests.post(
                f"{client.base}/prompt", data=request["raw_body"], timeout=HTTP_TIMEOUT_S
            )
            assert response.status_code == real["status"] == 500, name
            assert response.headers["Content-Type"] == real["headers"]["Content-Type"], name
            continue
        response = client.post(request["json"])
        assert response.status_code == real["status"], (name, response.text)
        if real["status"] != 200:
            assert _error_types(response.json()) == _error_types(real["json"]), name
            continue
        assert _error_types(response.json()) == _error_types(real["json"]), name
        prompt_id = response.json()["prompt_id"]
        client.until_done(prompt_id)
        ours = client.history(prompt_id)
        (theirs,) = case["history"].values()
        assert ours["status"]["status_str"] == theirs["status"]["status_str"], name
        assert ours["prompt"][2] == theirs["prompt"][2], name  # numeric strings coerced
        assert ours["prompt"][4] == theirs["prompt"][4], name


def test_cli_prints_ready_and_serves(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "localcloud.comfyui_standin", "--port", "0"]
    for name in ("input", "output", "temp"):
        args += [f"--{name}-dir", str(tmp_path / name)]
    process = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), line
        base = line.removeprefix("READY ")
        assert base.rsplit(":", 1)[1] != "0"
        stats = requests.get(f"{base}/system_stats", timeout=HTTP_TIMEOUT_S).json()
        assert "STAND-IN" in stats["system"]["standin"]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert "ComfyUI STAND-IN (not ComfyUI)" in stderr


def test_scale_blur_batch_and_preview(client: Client, standin: StandinServer) -> None:
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 32, "batch_size": 2, "color": 0x336699},
        },
        "2": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 2.0},
        },
        "3": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["2", 0],
                "upscale_method": "bilinear",
                "width": 16,
                "height": 0,
                "crop": "disabled",
            },
        },
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "5": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "lanczos",
                "width": 10,
                "height": 10,
                "crop": "center",
            },
        },
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "sq"}},
    }
    prompt_id, _ = client.run({"prompt": prompt})
    outputs = client.history(prompt_id)["outputs"]
    previews, saved = outputs["4"]["images"], outputs["6"]["images"]
    assert [p["type"] for p in previews] == ["temp", "temp"]
    assert [s["filename"] for s in saved] == ["sq_00001_.png", "sq_00002_.png"]
    for image, size in ((previews[0], (16, 8)), (saved[1], (10, 10))):
        query = f"filename={image['filename']}&subfolder={image['subfolder']}&type={image['type']}"
        png = Image.open(io.BytesIO(client.get(f"/view?{query}").content))
        assert png.size == size
        assert png.getpixel((4, 4)) == (0x33, 0x66, 0x99)  # a flat colour survives blur and scale
    assert (standin.dirs.temp / previews[1]["filename"]).is_file()
