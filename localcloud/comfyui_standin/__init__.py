"""ComfyUI STAND-IN (not ComfyUI): speaks ComfyUI's HTTP/websocket protocol, runs image-only nodes.

Written from transcripts of a real ComfyUI 0.3.64 (tests/test_data/comfyui_api/); it executes
EmptyImage, LoadImage, ImageInvert, ImageScale, ImageBlur, SaveImage, PreviewImage and
SaveAnimatedWEBP with Pillow, validates prompts with the shared `comfyburst.preflight`
validator and injects faults on request (see `faults.py`). It lists CheckpointLoaderSimple,
EmptyLatentImage and VAEDecode but holds no checkpoint, so a workflow naming one is refused as
a real ComfyUI without it refuses it (`value_not_in_list`, "not in []"). Use `StandinServer`
in tests, `python -m localcloud.comfyui_standin` from a shell.
"""

from .faults import ExecutionErrorFault, Faults
from .server import StandinServer

__all__ = ["ExecutionErrorFault", "Faults", "StandinServer"]
