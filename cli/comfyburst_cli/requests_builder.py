"""Turn CLI arguments (a workflow file, --model, --input) into a job request."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from comfyburst.schema import JobRequest, ModelKind


class CliInputError(ValueError):
    """An argument the CLI cannot use; the message says which and why."""


def parse_model(spec: str) -> dict[str, Any]:
    """`KIND[/FILENAME]=URL[#sha256=HEX]` → a model entry of the job request."""
    left, sep, url = spec.partition("=")
    if not sep or not url:
        raise CliInputError(f"--model {spec!r}: expected KIND[/FILENAME]=URL")
    kind, _, filename = left.partition("/")
    kinds = [k.value for k in ModelKind]
    if kind not in kinds:
        raise CliInputError(f"--model {spec!r}: unknown kind {kind!r}; one of {', '.join(kinds)}")
    url, _, fragment = url.partition("#")
    entry: dict[str, Any] = {"kind": kind, "url": url}
    if fragment:
        name, _, value = fragment.partition("=")
        if name != "sha256" or not value:
            raise CliInputError(f"--model {spec!r}: the fragment must be #sha256=HEX")
        entry["sha256"] = value
    entry["filename"] = filename or Path(urlparse(url).path).name
    if not entry["filename"]:
        raise CliInputError(f"--model {spec!r}: give a filename: KIND/FILENAME=URL")
    return entry


def load_request(
    workflow_path: Path,
    models: list[str],
    inputs: list[Path],
    timeout_s: int | None,
    gpu_class: str | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    """Build and validate the request; the file is an API-format workflow or a whole request."""
    try:
        document = json.loads(workflow_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CliInputError(f"{workflow_path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise CliInputError(f"{workflow_path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(document, dict):
        raise CliInputError(f"{workflow_path}: expected a JSON object")
    request: dict[str, Any] = document if "workflow" in document else {"workflow": document}
    request.setdefault("models", [])
    request["models"] = [*request["models"], *(parse_model(m) for m in models)]
    request.setdefault("inputs", [])
    for path in inputs:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliInputError(f"--input {path}: {exc.strerror}") from exc
        request["inputs"].append({"name": path.name, "data_b64": base64.b64encode(data).decode()})
    if timeout_s is not None:
        request.setdefault("options", {})["timeout_s"] = timeout_s
    if gpu_class is not None:
        request.setdefault("options", {})["gpu_class"] = gpu_class
    if environment is not None:
        request.setdefault("options", {})["environment"] = environment
    try:
        JobRequest.model_validate(request)
    except ValueError as exc:
        raise CliInputError(f"{workflow_path}: not a valid job request:\n{exc}") from exc
    return request
