"""Prompt validation through the shared pre-flight validator (`comfyburst.preflight`).

The answers are ComfyUI's, payload and all (tests/test_data/comfyui_api/prompt_errors.json):
`extra_info` keeps `input_config` as ComfyUI reports it (for a combo, the list of values as a
list inside the list) and an inner validation exception carries a traceback, here the
stand-in's own frames. A worker stores what it gets; the stand-in must send what it will get.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Verdict:
    """What `POST /prompt` needs from a validator."""

    accepted: bool
    http_status: int
    body: dict[str, Any]
    outputs_to_execute: list[str]


class Validator(Protocol):
    """Validates a prompt against the stand-in's object_info and input files."""

    def __call__(
        self, prompt: Any, object_info: dict[str, Any], input_files: list[str]
    ) -> Verdict: ...


def preflight_validator(
    prompt: Any, object_info: dict[str, Any], input_files: list[str]
) -> Verdict:
    """The shared validator, imported at call time so the stand-in imports without it."""
    from comfyburst.preflight import Catalogue, validate_prompt

    catalogue = Catalogue.from_object_info(object_info)
    verdict = validate_prompt(prompt, catalogue, extra_models={}, input_files=input_files)
    body = dict(verdict.body)
    _with_tracebacks(body)
    return Verdict(
        accepted=bool(verdict.accepted),
        http_status=int(verdict.http_status),
        body=body,
        outputs_to_execute=[str(n) for n in verdict.outputs_to_execute],
    )


def _with_tracebacks(body: dict[str, Any]) -> None:
    """Fill the empty `traceback` of inner validation errors, as ComfyUI sends one."""
    node_errors = body.get("node_errors")
    for entry in node_errors.values() if isinstance(node_errors, dict) else ():
        for error in entry.get("errors") or ():
            extra = error.get("extra_info")
            if isinstance(extra, dict) and extra.get("traceback") == []:
                extra["traceback"] = traceback.format_stack(limit=3)[:-1]
