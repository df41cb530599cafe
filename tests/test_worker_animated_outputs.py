"""ComfyUI's `animated` flag survives from a node's outputs to the done manifest, per output."""

from __future__ import annotations

import io

from PIL import Image

from comfyburst.schema import DoneManifest, DoneStatus, OutputFormat, VmRef
from comfyburst_worker.outputs import output_refs
from tests._worker_support import (
    local_config,
    local_settings,
    make_agent,
    make_request,
    put_job,
)
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

VM = VmRef(name="comfyburst-gpu-0", zone="us-central1-a")
FRAMES = 3


def _entry(filename: str) -> dict[str, str]:
    return {"filename": filename, "subfolder": "", "type": "output"}


def test_the_flag_marks_only_the_images_of_the_node_that_set_it() -> None:
    """/history's shape (ComfyUI 0.3.64): `animated` is a per-node list beside `images`."""
    outputs = {
        "3": {"images": [_entry("still_00001_.png")]},
        "4": {"images": [_entry("anim_00001_.webp")], "animated": [True]},
        "5": {"images": [_entry("one_00001_.webp")], "animated": [False]},
        "6": {"gifs": [_entry("clip_00001_.mp4")], "animated": [True]},
    }
    got = {(r.node_id, r.filename, r.animated) for r in output_refs(outputs)}
    assert got == {
        ("3", "still_00001_.png", False),
        ("4", "anim_00001_.webp", True),
        ("5", "one_00001_.webp", False),
        ("6", "clip_00001_.mp4", False),  # the flag describes `images`, not other keys
    }


def _gif_frames() -> bytes:
    """FRAMES distinct colours as one GIF (identical frames would be merged by the encoders)."""
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)][:FRAMES]
    frames = [Image.new("RGB", (16, 16), c) for c in colours]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def _animated_workflow() -> dict[str, object]:
    save = {
        "images": ["2", 0],
        "filename_prefix": "cb/anim",
        "fps": 8.0,
        "lossless": True,
        "quality": 80,
        "method": "fastest",
    }
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "frames.gif"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "cb/s"}},
        "4": {"class_type": "SaveAnimatedWEBP", "inputs": save},
    }


def test_an_animated_webp_reaches_the_manifest_flagged_with_its_node_and_frames(
    tmp_path, standin
) -> None:
    """Through the stand-in and the agent: the flag and the node ride in done.json, and the
    requested output format leaves the animation whole (re-encoding would keep one frame)."""
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    config = local_config()
    request = make_request(_animated_workflow(), inputs={"frames.gif": _gif_frames()})
    request.options.output_format = OutputFormat.PNG
    job = put_job(store, blobs, config, request, VM)
    make_agent(local_settings(standin, tmp_path / "m"), config, store, blobs, VM).run(job.job_id)
    done = DoneManifest.model_validate_json(blobs.read("signals", f"jobs/{job.job_id}/done.json"))
    assert done.status is DoneStatus.SUCCEEDED, done.error
    stills = [o for o in done.outputs if o.node_id == "3"]
    assert len(stills) == FRAMES and not any(o.animated for o in stills)
    assert all(o.name.endswith(".png") for o in stills)
    (anim,) = [o for o in done.outputs if o.node_id == "4"]
    assert anim.animated is True
    assert (anim.name.endswith(".webp"), anim.content_type) == (True, "image/webp")
    stored = blobs.read("outputs", f"jobs/{job.job_id}/outputs/{anim.name}")
    with Image.open(io.BytesIO(stored or b"")) as image:
        assert (image.format, image.n_frames) == ("WEBP", FRAMES)
