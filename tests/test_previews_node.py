"""Live previews in the ComfyUI node: fetched about once a second while the job runs, shown
only when new, bounded and checked, handed to ComfyUI's progress bar like a sampler's."""

from __future__ import annotations

import io
import sys
import types
from typing import Any

import pytest
from PIL import Image

from comfy_node import _comfy
from comfy_node._vendor.comfyburst_core.client import ApiError
from comfy_node.previews import MAX_PREVIEW_BYTES, PreviewPoller, decode_preview


def _image(fmt: str, size: tuple[int, int] = (16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format=fmt)
    return buffer.getvalue()


class _Client:
    """Answers GET /jobs/{id}/preview from a list (an Exception is raised)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers, self.calls = answers, 0

    def preview(self, job_id: str) -> tuple[bytes, str] | None:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _poller(answers: list[Any]) -> tuple[PreviewPoller, _Client, list[tuple[int, Any]], list]:
    client, shown, now = _Client(answers), [], [0.0]
    poller = PreviewPoller(
        client,
        "job1",
        lambda value, image: shown.append((value, image)),
        every_s=1.0,
        clock=lambda: now[0],
    )
    return poller, client, shown, now


RUNNING = {"state": "running"}


def test_polls_about_once_a_second_only_while_running_and_shows_new_frames() -> None:
    first, second = _image("JPEG"), _image("PNG")
    poller, client, shown, now = _poller(
        [(first, "image/jpeg"), (first, "image/jpeg"), (second, "image/png"), None]
    )
    poller({"state": "starting"}, 0)
    assert client.calls == 0
    poller(RUNNING, 10)
    poller(RUNNING, 20)  # within the second: not asked
    assert client.calls == 1 and [v for v, _ in shown] == [10]
    now[0] += 1.0
    poller(RUNNING, 30)  # the same frame again: not shown twice
    now[0] += 1.0
    poller(RUNNING, 40)
    now[0] += 1.0
    poller(RUNNING, 50)  # none now
    assert client.calls == 4 and [v for v, _ in shown] == [10, 40]
    assert shown[1][1].mode == "RGB" and shown[1][1].size == (16, 16)
    now[0] += 1.0
    poller({"state": "succeeded"}, 1000)
    assert client.calls == 4 and poller.shown == 2


def test_a_failed_or_bad_preview_is_skipped() -> None:
    import requests

    poller, client, shown, now = _poller(
        [
            ApiError(404, {"error": {"code": "not_found", "message": "job not found"}}),
            requests.ConnectionError("down"),
            (b"<html>", "image/jpeg"),
        ]
    )
    for _ in range(3):
        poller(RUNNING, 5)
        now[0] += 1.0
    assert client.calls == 3 and shown == []


def test_decode_preview_takes_small_jpeg_png_webp_only() -> None:
    for fmt in ("JPEG", "PNG", "WEBP"):
        image = decode_preview(_image(fmt))
        assert image is not None and image.mode == "RGB", fmt
    assert decode_preview(_image("GIF")) is None
    assert decode_preview(b"not an image") is None
    assert decode_preview(_image("PNG", (3000, 3000))) is None  # too many pixels
    assert decode_preview(_image("JPEG") + b"\0" * MAX_PREVIEW_BYTES) is None


def test_preview_reporter_outside_comfyui_does_nothing() -> None:
    assert _comfy.preview_reporter(1000)(5, Image.new("RGB", (4, 4))) is None


def test_preview_reporter_hands_the_image_to_comfyuis_progress_bar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ComfyUI's ProgressBar.update_absolute(value, total, (format, PIL image, max size)) is
    how a sampler's preview reaches the frontend; a stand-in module records the call."""
    calls: list[tuple[Any, ...]] = []

    class ProgressBar:
        def __init__(self, total: int) -> None:
            self.total = total

        def update_absolute(self, value: int, total: int, preview: Any = None) -> None:
            calls.append((value, total, preview))

    class Interrupted(Exception):
        pass

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    management = types.ModuleType("comfy.model_management")
    utils.ProgressBar = ProgressBar  # type: ignore[attr-defined]
    management.InterruptProcessingException = Interrupted  # type: ignore[attr-defined]
    comfy.utils, comfy.model_management = utils, management  # type: ignore[attr-defined]
    for name, module in (("comfy", comfy), ("comfy.utils", utils)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "comfy.model_management", management)
    image = Image.new("RGB", (8, 8))
    _comfy.preview_reporter(1000)(250, image)
    assert calls == [(250, 1000, ("JPEG", image, _comfy.PREVIEW_MAX_SIZE_PX))]
