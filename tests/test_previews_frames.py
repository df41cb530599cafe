"""Live previews on the GPU side: the ComfyUI stand-in's binary frames follow the real server's
transcript (ws_preview_binary_frames.json), and the worker parses, bounds and throttles them."""

from __future__ import annotations

import io
import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from PIL import Image

from comfyburst.domain.previews import MAX_PREVIEW_BYTES, preview_object, preview_type
from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.previews import Preview, PreviewForwarder, parse_frame
from comfyburst_worker.progress import ProgressThrottle
from comfyburst_worker.run_tracker import Outcome, RunTracker
from comfyburst_worker.ws_follower import WsFollower
from localcloud.comfyui_standin import StandinServer
from localcloud.comfyui_standin.faults import Faults
from tests._poll import poll_until
from tests.fakes import InMemoryBlobStore

DATA = Path(__file__).parent / "test_data" / "comfyui_api"
TRANSCRIPT = json.loads((DATA / "ws_preview_binary_frames.json").read_text())
LEGACY = TRANSCRIPT["legacy_client_no_feature_flags"]
WITH_METADATA = TRANSCRIPT["client_with_supports_preview_metadata"]
SAMPLER = "3"  # the KSampler's node id in the transcript
STEPS = 3
WS_TIMEOUT_S = 10


def _jpeg(size: int = 16, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _kinds(run: list[dict[str, Any]]) -> list[str]:
    """Message kinds of the sampler node: from its `executing` to the next one."""
    kinds = ["binary" if "binary" in m else m["json"]["type"] for m in run]
    nodes = [m.get("json", {}).get("data", {}).get("node") for m in run]
    start = next(
        i
        for i, (k, n) in enumerate(zip(kinds, nodes, strict=True))
        if k == "executing" and n == SAMPLER
    )
    end = next(i for i in range(start + 1, len(kinds)) if kinds[i] == "executing")
    return kinds[start:end]


def _binary_record(frame: bytes) -> dict[str, Any]:
    """A frame described as the transcript describes its frames."""
    event, second = struct.unpack_from(">II", frame)
    record: dict[str, Any] = {"event_type_u32be": event, "next_u32be": second}
    record["head_hex"] = frame[:24].hex()
    if event == 4:
        record["metadata"] = json.loads(frame[8 : 8 + second])
    return record


def _sampling_prompt() -> dict[str, Any]:
    """EmptyImage → the stand-in's sampler (its slow node, here as node 3) → SaveImage."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0x336699},
        },
        SAMPLER: {
            "class_type": "ImageBlur",
            "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0},
        },
        "9": {
            "class_type": "SaveImage",
            "inputs": {"images": [SAMPLER, 0], "filename_prefix": "preview_test"},
        },
    }


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinServer]:
    faults = Faults(slow_node_class="ImageBlur", sampler_steps=STEPS)
    server = StandinServer(
        tmp_path / "in", tmp_path / "out", tmp_path / "tmp", faults=faults, preview_method="auto"
    )
    server.start()
    yield server
    server.stop()


def _run(standin: StandinServer, flags: dict[str, Any] | None, prompt_id: str) -> list[Any]:
    """One run's messages as the transcript records them ({"json"} or {"binary", "frame"})."""
    client_id = f"preview-{uuid.uuid4().hex[:8]}"
    url = f"{standin.base_url.replace('http', 'ws', 1)}/ws?clientId={client_id}"
    ws = websocket.create_connection(url, timeout=WS_TIMEOUT_S)
    try:
        ws.recv()  # status with the sid
        if flags is not None:
            ws.send(json.dumps({"type": "feature_flags", "data": flags}))
            assert json.loads(ws.recv())["type"] == "feature_flags"
        comfy = ComfyClient(standin.base_url)
        answer = comfy.post_prompt(_sampling_prompt(), client_id, prompt_id)
        assert answer.status == 200, answer.body
        run: list[Any] = []
        while True:
            raw = ws.recv()
            if isinstance(raw, bytes):
                run.append({"binary": _binary_record(raw), "frame": raw})
                continue
            message = json.loads(raw)
            run.append({"json": message})
            if message["type"] == "executing" and message["data"]["node"] is None:
                return run
    finally:
        ws.close()


@pytest.mark.parametrize(
    ("flags", "transcript"),
    [(None, LEGACY), ({"supports_preview_metadata": True}, WITH_METADATA)],
    ids=["legacy", "metadata"],
)
def test_standin_sampler_frames_follow_the_transcript(
    standin: StandinServer, flags: dict[str, Any] | None, transcript: dict[str, Any]
) -> None:
    real = transcript["ws_run"]
    prompt_id = real[2]["json"]["data"]["prompt_id"]  # the capture's, so the metadata matches
    ours = _run(standin, flags, prompt_id)
    assert _kinds(ours) == _kinds(real)
    real_frames = [m["binary"] for m in real if "binary" in m]
    our_frames = [m["binary"] for m in ours if "binary" in m]
    assert len(our_frames) == len(real_frames) == STEPS
    for mine, theirs in zip(our_frames, real_frames, strict=True):
        assert mine["event_type_u32be"] == theirs["event_type_u32be"]
        assert mine["next_u32be"] == theirs["next_u32be"]
        assert mine["head_hex"] == theirs["head_hex"]
        assert mine.get("metadata") == theirs.get("metadata")
    for frame in (m["frame"] for m in ours if "frame" in m):
        preview = parse_frame(frame, prompt_id)
        assert preview is not None and preview.content_type == "image/jpeg"
        assert Image.open(io.BytesIO(preview.data)).format == "JPEG"


def test_standin_sends_no_frames_without_a_preview_method(tmp_path: Path) -> None:
    faults = Faults(slow_node_class="ImageBlur", sampler_steps=STEPS)
    with StandinServer(tmp_path / "i", tmp_path / "o", tmp_path / "t", faults=faults) as server:
        run = _run(server, {"supports_preview_metadata": True}, str(uuid.uuid4()))
    kinds = _kinds(run)
    assert "binary" not in kinds and kinds.count("progress") == STEPS


def test_worker_socket_announces_metadata_and_hands_frames_over(standin: StandinServer) -> None:
    comfy = ComfyClient(standin.base_url)
    follower = WsFollower(comfy, f"agent-{uuid.uuid4().hex[:8]}")
    prompt_id = str(uuid.uuid4())
    frames: list[bytes] = []
    try:
        follower.ensure_connected()
        assert comfy.post_prompt(_sampling_prompt(), follower.client_id, prompt_id).status == 200
        tracker = RunTracker(prompt_id=prompt_id, node_count=3)
        follower.follow(tracker, lambda _p: None, lambda: False, on_binary=frames.append)
    finally:
        follower.close()
    assert tracker.outcome is Outcome.SUCCESS
    assert len(frames) == STEPS
    assert all(struct.unpack_from(">I", f)[0] == 4 for f in frames)  # the metadata form
    assert all(parse_frame(f, prompt_id) is not None for f in frames)
    assert all(parse_frame(f, "another-prompt") is None for f in frames)


def _legacy(image: bytes, kind: int = 1) -> bytes:
    return struct.pack(">II", 1, kind) + image


def _with_metadata(image: bytes, prompt_id: str, image_type: str = "image/jpeg") -> bytes:
    text = json.dumps({"node_id": "3", "prompt_id": prompt_id, "image_type": image_type}).encode()
    return struct.pack(">II", 4, len(text)) + text + image


def test_parse_frame_reads_both_forms_and_refuses_what_is_not_a_preview() -> None:
    jpeg, png = _jpeg(), _png()
    assert parse_frame(_legacy(jpeg), "p") == Preview(jpeg, "image/jpeg")
    assert parse_frame(_legacy(png, 2), "p") == Preview(png, "image/png")
    assert parse_frame(_with_metadata(png, "p", "image/png"), "p") == Preview(png, "image/png")
    refused = {
        "other prompt": _with_metadata(jpeg, "q"),
        "claims png, is jpeg": _with_metadata(jpeg, "p", "image/png"),
        "legacy claims png": _legacy(jpeg, 2),
        "unknown legacy format": _legacy(jpeg, 7),
        "not an image": _legacy(b"GIF89a" + b"\0" * 40),
        "unknown event": struct.pack(">II", 3, 1) + jpeg,
        "metadata past the end": struct.pack(">II", 4, 10_000) + b"{}",
        "metadata not json": struct.pack(">II", 4, 2) + b"{x" + jpeg,
        "metadata not an object": struct.pack(">II", 4, 2) + b"[]" + jpeg,
        "too short": b"\0\0\0\1",
        "too large": _legacy(jpeg + b"\0" * MAX_PREVIEW_BYTES),
    }
    for why, frame in refused.items():
        assert parse_frame(frame, "p") is None, why


def test_preview_type_is_by_bytes_and_bounded() -> None:
    webp = b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 8
    assert preview_type(webp) == "image/webp"
    assert preview_type(_jpeg()) == "image/jpeg"
    assert preview_type(b"") is None
    assert preview_type(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    assert preview_type(b"\xff\xd8\xff" + b"\0" * MAX_PREVIEW_BYTES) is None


def test_throttle_keeps_only_the_latest_preview_per_interval() -> None:
    now = [100.0]
    throttle: ProgressThrottle[Preview] = ProgressThrottle(1.0, lambda: now[0])
    first, second, third = (Preview(bytes([i]), "image/jpeg") for i in range(3))
    throttle.offer(first)
    assert throttle.due() == first
    throttle.offer(second)
    throttle.offer(third)
    now[0] += 0.5
    assert throttle.due() is None
    now[0] += 0.5
    assert throttle.due() == third
    assert throttle.due() is None


def test_forwarder_writes_the_first_frame_at_once_then_deletes_it_at_close() -> None:
    blobs = InMemoryBlobStore()
    forwarder = PreviewForwarder(blobs, "outs", "job1", "p", min_interval_s=3600)
    frames = [_legacy(_jpeg(quality=q)) for q in (50, 60, 70, 80)]
    forwarder.offer(frames[0])
    name = preview_object("job1")
    data = _poll_object(blobs, "outs", name)
    assert data == frames[0][8:] and blobs.objects[("outs", name)][1] == "image/jpeg"
    for frame in frames[1:]:
        forwarder.offer(frame)
    forwarder.offer(_legacy(b"not an image"))
    forwarder.close()
    assert forwarder.written == 1  # the rest came within the interval and were dropped
    assert blobs.read("outs", name) is None


def test_a_failing_store_never_reaches_the_run() -> None:
    class Broken(InMemoryBlobStore):
        def write(self, *args: Any, **kwargs: Any) -> int:
            raise OSError("storage down")

        def delete(self, bucket: str, name: str) -> None:
            raise OSError("storage down")

    forwarder = PreviewForwarder(Broken(), "outs", "job1", "p", min_interval_s=0.0)
    forwarder.offer(_legacy(_jpeg()))
    forwarder.offer(b"\xff" * 3)
    forwarder.close()
    assert forwarder.written == 0


def _poll_object(blobs: InMemoryBlobStore, bucket: str, name: str) -> bytes:
    found = poll_until(lambda: blobs.read(bucket, name), f"{name} written", timeout_s=10)
    assert found is not None
    return found
