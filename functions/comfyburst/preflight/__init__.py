"""Pre-flight validation: reject a workflow that cannot run before any GPU is paid for.

The API checks every workflow against the GPU image's node catalogue (ComfyUI's
`/object_info`) and answers exactly what ComfyUI's `POST /prompt` would: status, `error` and
`node_errors`.
"""

from comfyburst.preflight._catalogue import Catalogue, CatalogueError, ClassSpec, InputSpec
from comfyburst.preflight._model_kinds import MODEL_INPUT_KINDS, model_kinds_for
from comfyburst.preflight._validate import PromptVerdict, validate_prompt

__all__ = [
    "MODEL_INPUT_KINDS",
    "Catalogue",
    "CatalogueError",
    "ClassSpec",
    "InputSpec",
    "PromptVerdict",
    "model_kinds_for",
    "validate_prompt",
]
