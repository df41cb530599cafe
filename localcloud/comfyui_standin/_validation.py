"""Prompt validation through the shared pre-flight validator (`comfyburst.preflight`)."""

from __future__ import annotations

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
    return Verdict(
        accepted=bool(verdict.accepted),
        http_status=int(verdict.http_status),
        body=dict(verdict.body),
        outputs_to_execute=[str(n) for n in verdict.outputs_to_execute],
    )
