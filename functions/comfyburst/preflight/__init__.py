"""Pre-flight validation: reject a workflow that cannot run before any GPU is paid for.

The API checks every workflow against the GPU image's node catalogue (ComfyUI's
`/object_info`) and answers exactly what ComfyUI's `POST /prompt` would: status, `error` and
`node_errors`.

Where the captured transcripts (tests/test_data/comfyui_api/prompt_errors.json) show nothing,
these are our choices:
- a `prompt` that is None answers `no_prompt`; any other non-object answers `invalid_prompt`;
- an output node whose own link points nowhere: `exception_during_validation` under it (a
  non-output node's bad link is reported under it through its consumer, as captured);
- a list input that is not a pair: `bad_linked_input`; a loop of links: `dependency_cycle`;
- `traceback` in exception errors is empty (ComfyUI's lists its own source lines);
- `dependent_outputs` lists the failed outputs that really depend on the node;
- errors within a node follow the catalogue's `input_order`, outputs follow the prompt's order;
- union link types (`A,B`) fit when every received type is accepted; `*` fits anything;
- a COMBO input without an `options` list (filled by the frontend) is not checked;
- file values (LoadImage and every other upload-style input) are never annotated
  (`[input]`, `[output]`, `[temp]`), absolute, or hold `..` or a separator, and never come
  from a folder other than input (`image_folder`): on a shared VM such a name could reach
  another job's file (`custom_validation_failed`, "File not available to this job"). A value
  that is exactly one of `input_files` (the job's own uploads) always passes;
- `input_files=None` skips the presence check of plain file values (the API passes the job's
  declared input names); when given, a plain file passes if it is listed there or in the
  catalogue (baked into the image);
- the workflow is never rewritten (ComfyUI stores coerced numbers back into it).
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
