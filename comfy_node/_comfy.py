"""The edge to ComfyUI: every `comfy.*`, `folder_paths` and `server` import lives here, inside
functions, so the package imports and is tested without ComfyUI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ComfyUI's own --preview-size default: the frontend gets previews at most this large.
PREVIEW_MAX_SIZE_PX = 512


def _progress_bar(total: int) -> Callable[[int, Any], None] | None:
    """`update(value, preview)` of a ProgressBar of the running node; None outside ComfyUI."""
    try:
        import comfy.model_management
        import comfy.utils
    except ImportError:
        return None
    bar = comfy.utils.ProgressBar(total)
    management = comfy.model_management

    def update(value: int, preview: Any = None) -> None:
        try:
            bar.update_absolute(value, total, preview)
        except management.InterruptProcessingException:
            # ComfyUI's progress hook clears the Cancel flag as it raises; set it again so the
            # node still sees it, cancels the remote job, and only then stops.
            management.interrupt_current_processing(True)

    return update


def progress_reporter(total: int) -> Callable[[int], None]:
    """A callback that moves ComfyUI's progress bar of the running node (no-op outside)."""
    update = _progress_bar(total)
    if update is None:
        return lambda value: None
    return lambda value: update(value, None)


def preview_reporter(total: int) -> Callable[[int, Any], None]:
    """A callback that shows a PIL image on the running node as its live preview, the way a
    sampler's progress bar carries one to the frontend (no-op outside ComfyUI)."""
    update = _progress_bar(total)
    if update is None:
        return lambda value, image: None
    return lambda value, image: update(value, ("JPEG", image, PREVIEW_MAX_SIZE_PX))


def interrupt_requested() -> bool:
    """True when the user pressed Cancel in ComfyUI."""
    try:
        import comfy.model_management
    except ImportError:
        return False
    return bool(comfy.model_management.processing_interrupted())


def raise_if_interrupted() -> None:
    try:
        import comfy.model_management
    except ImportError:
        return
    comfy.model_management.throw_exception_if_processing_interrupted()


def prompt_server() -> Any | None:
    """ComfyUI's running server (`PromptServer.instance`); None outside ComfyUI."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


# The websocket event the extension (web/js/comfyburst.js) shows as a notice.
STATUS_EVENT = "comfyburst.status"


def status_reporter() -> Callable[[str], None]:
    """A callback that tells the browser which queued this prompt a line of status (the
    extension shows it as a notice); no-op outside ComfyUI."""
    server = prompt_server()
    if server is None:
        return lambda message: None

    def send(message: str) -> None:
        # The running prompt's browser, as ComfyUI's own events go; none: nobody to tell.
        client_id = getattr(server, "client_id", None)
        if client_id is not None:
            server.send_sync(STATUS_EVENT, {"message": message}, client_id)

    return send


def serves_tls() -> bool:
    """Whether this ComfyUI was started with a TLS key (its `/prompt` is then https)."""
    from comfy.cli_args import args

    return bool(args.tls_keyfile)


def node_pack_folder(class_type: str) -> Path | None:
    """The custom-node folder a node type was loaded from (None: core, unknown, or outside)."""
    try:
        import folder_paths
        import nodes
    except ImportError:
        return None
    node_class = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    # ComfyUI sets this on every class it loads: "custom_nodes.<folder name>".
    module = str(getattr(node_class, "RELATIVE_PYTHON_MODULE", "") or "")
    parent, _, name = module.partition(".")
    if parent != "custom_nodes" or not name:
        return None
    for base in folder_paths.get_folder_paths("custom_nodes"):
        candidate = Path(base) / name
        if candidate.is_dir():
            return candidate
    return None


def video_from_file(path: str) -> Any | None:
    """ComfyUI's VIDEO value for a saved video file; None where this ComfyUI has no VIDEO."""
    try:
        from comfy_api.latest import InputImpl
    except ImportError:
        return None
    return InputImpl.VideoFromFile(path)


def audio_from_file(path: str) -> Any | None:
    """ComfyUI's AUDIO value ({waveform [1, C, T], sample_rate}); None where it has none."""
    try:
        from comfy_extras.nodes_audio import load
    except ImportError:
        return None
    waveform, sample_rate = load(path)
    return {"waveform": waveform.unsqueeze(0), "sample_rate": sample_rate}


def _folder(getter: str) -> str | None:
    try:
        import folder_paths
    except ImportError:
        return None
    return str(getattr(folder_paths, getter)())


def user_directory() -> str | None:
    return _folder("get_user_directory")


def output_directory() -> str | None:
    return _folder("get_output_directory")


def input_directory() -> str | None:
    return _folder("get_input_directory")


# Outside ComfyUI (tests, tools) the combos need only one valid value each.
_DEFAULT_COMBOS = {"sampler_name": ["euler"], "scheduler": ["normal"]}
# The GPU image's catalogue, found by path where the node runs from a ComfyBurst checkout: the
# node never imports `comfyburst` (in ComfyUI's environment that name may be someone else's).
_CHECKOUT_CATALOGUE = (
    Path(__file__).resolve().parent.parent / "functions/comfyburst/preflight/data/object_info.json"
)


def _catalogue_combo(class_type: str, input_name: str) -> list[str]:
    """A combo's values from the cloud side's catalogue in a ComfyBurst checkout, else the
    node's default (the packed node has no catalogue)."""
    if not _CHECKOUT_CATALOGUE.is_file():
        return list(_DEFAULT_COMBOS[input_name])
    catalogue = json.loads(_CHECKOUT_CATALOGUE.read_text(encoding="utf-8"))
    spec = catalogue[class_type]["input"]["required"][input_name]
    values = spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])
    return [str(v) for v in values]


def sampler_names() -> list[str]:
    try:
        import comfy.samplers
    except ImportError:
        return _catalogue_combo("KSampler", "sampler_name")
    return list(comfy.samplers.KSampler.SAMPLERS)


def scheduler_names() -> list[str]:
    try:
        import comfy.samplers
    except ImportError:
        return _catalogue_combo("KSampler", "scheduler")
    return list(comfy.samplers.KSampler.SCHEDULERS)


def local_model_file(value: str, input_name: str) -> tuple[str, Path] | None:
    """(kind, path) of a file this ComfyUI's model folders hold under `value` (the first kind
    ComfyBurst can bring that has it); None outside ComfyUI or when no folder has it."""
    try:
        import folder_paths
    except ImportError:
        return None
    from ._vendor.comfyburst_core.schema import ModelKind

    for kind in ModelKind:
        try:
            found = folder_paths.get_full_path(kind.value, value)
        except KeyError:  # a folder name this ComfyUI does not know
            continue
        if found and Path(found).is_file():
            return kind.value, Path(found)
    return None
