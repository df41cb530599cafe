"""validate_prompt: answer a workflow as ComfyUI's `POST /prompt` validation would."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from comfyburst.preflight import _errors as err
from comfyburst.preflight._catalogue import (
    UPLOAD_ELSEWHERE,
    UPLOAD_FILE,
    UPLOAD_IMAGE,
    Catalogue,
    ClassSpec,
    InputSpec,
    types_match,
)
from comfyburst.schema import is_plain_file_value

_MISSING: Any = object()

# A node validation step yields the id of a linked node it needs and is sent back its validity.
_NodeSteps = Generator[str, bool, None]


@dataclass(frozen=True, slots=True)
class PromptVerdict:
    """What ComfyUI would answer: status, body, and which outputs would run."""

    accepted: bool
    http_status: int  # 200 or 400
    body: dict[str, Any]  # ComfyUI's body without prompt_id/number
    outputs_to_execute: list[str]
    node_errors: dict[str, Any]  # the same object as body["node_errors"]


def _rejected(error: err.ErrorDict, node_errors: dict[str, Any] | None = None) -> PromptVerdict:
    node_errors = {} if node_errors is None else node_errors
    body = {"error": error, "node_errors": node_errors}
    return PromptVerdict(False, 400, body, [], node_errors)


class _LinkFault(Exception):
    """A node whose own link points nowhere; ComfyUI reports it through the node's consumer."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(str(exc))
        self.exception_type = type(exc).__name__
        self.exception_message = str(exc)


def validate_prompt(
    prompt: Any,
    catalogue: Catalogue,
    extra_models: Mapping[str, Iterable[str]] | None = None,
    input_files: Iterable[str] | None = None,
) -> PromptVerdict:
    """Validate an API-format workflow (the `prompt` value of `POST /prompt`) against a catalogue.

    `extra_models` maps a model folder kind to the files the job brings (added to the allowed
    values of combo inputs of that kind, see MODEL_INPUT_KINDS). `input_files` lists the files
    in (or uploaded to) the input folder; when None, file-picking inputs are not checked.
    """
    if prompt is None:
        return _rejected(err.no_prompt())
    if not isinstance(prompt, Mapping):
        return _rejected(err.prompt_not_object(prompt))
    classes: dict[str, ClassSpec] = {}
    outputs: list[str] = []
    # Every node needs a known class, connected to an output or not.
    for node_id, node in prompt.items():
        if not _is_mapping(node) or "class_type" not in node:
            return _rejected(err.missing_class_type(node_id))
        class_type = node["class_type"]
        spec = catalogue.get(class_type) if isinstance(class_type, str) else None
        if spec is None:
            return _rejected(err.unknown_class_type(node_id, class_type))
        classes[node_id] = spec
        if spec.output_node:
            outputs.append(node_id)
    if not outputs:
        return _rejected(err.no_outputs())
    run = _Run(prompt, classes, extra_models, input_files)
    for output_id in outputs:
        run.validate_output(output_id)
    good = [o for o in outputs if run.valid[o]]
    node_errors = run.node_errors([o for o in outputs if not run.valid[o]])
    if not good:
        return _rejected(err.outputs_failed(), node_errors)
    return PromptVerdict(True, 200, {"node_errors": node_errors}, good, node_errors)


class _Run:
    """One validation: memoised per-node results, walked without Python recursion."""

    __slots__ = ("_active", "_classes", "_extras", "_files", "_prompt", "errors", "links", "valid")

    def __init__(
        self,
        prompt: Mapping[str, Any],
        classes: dict[str, ClassSpec],
        extra_models: Mapping[str, Iterable[str]] | None,
        input_files: Iterable[str] | None,
    ) -> None:
        self._prompt = prompt
        self._classes = classes
        self._extras: dict[str, tuple[str, ...]] = {
            kind: _names(names) for kind, names in (extra_models or {}).items()
        }
        self._files = None if input_files is None else frozenset(_names(input_files))
        self._active: set[str] = set()
        self.valid: dict[str, bool] = {}
        self.errors: dict[str, list[err.ErrorDict]] = {}  # in the order nodes finished
        self.links: dict[str, list[str]] = {}  # node -> linked nodes that made it invalid

    def validate_output(self, output_id: str) -> None:
        """Validate an output node and everything it depends on."""
        if output_id in self.valid:
            return
        stack: list[tuple[str, _NodeSteps]] = [(output_id, self._steps(output_id))]
        self._active.add(output_id)
        reply: bool | None = None
        fault: _LinkFault | None = None
        while stack:
            node_id, steps = stack[-1]
            try:
                if fault is not None:
                    thrown, fault = fault, None
                    wanted = steps.throw(thrown)
                else:
                    wanted = steps.send(reply)  # type: ignore[arg-type]  # None starts it
            except StopIteration:
                stack.pop()
                self._active.discard(node_id)
                reply = self.valid[node_id]
                continue
            except _LinkFault as exc:
                stack.pop()
                self._active.discard(node_id)
                if stack:
                    fault = exc  # the consumer reports it, under this node
                else:
                    self._fail(node_id, err.validation_exception(exc.exception_type, str(exc)))
                continue
            stack.append((wanted, self._steps(wanted)))
            self._active.add(wanted)
            reply = None

    def node_errors(self, failed_outputs: list[str]) -> dict[str, Any]:
        """ComfyUI's `node_errors`: each node with errors, and the failed outputs it broke."""
        result: dict[str, Any] = {}
        for output_id in failed_outputs:
            reached = self._reached(output_id)
            for node_id, errors in self.errors.items():
                if node_id not in reached:
                    continue
                entry = result.get(node_id)
                if entry is None:
                    class_type = self._classes[node_id].name
                    entry = {"errors": errors, "dependent_outputs": [], "class_type": class_type}
                    result[node_id] = entry
                entry["dependent_outputs"].append(output_id)
        return result

    def _reached(self, output_id: str) -> set[str]:
        seen = {output_id}
        todo = [output_id]
        while todo:
            for linked in self.links.get(todo.pop(), ()):
                if linked not in seen:
                    seen.add(linked)
                    todo.append(linked)
        return seen

    def _fail(self, node_id: str, error: err.ErrorDict) -> None:
        self.valid[node_id] = False
        self.errors[node_id] = [error]

    def _steps(self, node_id: str) -> _NodeSteps:
        node = self._prompt[node_id]
        class_spec = self._classes[node_id]
        inputs = node.get("inputs", _MISSING)
        if inputs is _MISSING:
            raise _LinkFault(KeyError("inputs"))
        if not _is_mapping(inputs):
            raise _LinkFault(TypeError(f"inputs is a {type(inputs).__name__}, not an object"))
        errors: list[err.ErrorDict] = []
        valid = True
        for spec in class_spec.inputs:
            value = inputs.get(spec.name, _MISSING)
            if value is _MISSING:
                if spec.required:
                    errors.append(err.required_input_missing(spec.name))
                continue
            if not isinstance(value, list):
                error = self._check_literal(spec, value)
                if error is not None:
                    errors.append(error)
                continue
            if len(value) != 2:
                errors.append(err.bad_linked_input(spec, value))
                continue
            linked_id, slot = value
            try:
                received_type = self._classes[linked_id].outputs[slot]
            except (KeyError, IndexError, TypeError) as exc:
                raise _LinkFault(exc) from None
            if not types_match(received_type, spec.type_name):
                errors.append(err.return_type_mismatch(spec, received_type, value))
                continue
            linked_valid = self.valid.get(linked_id)
            if linked_valid is None:
                if linked_id in self._active:
                    errors.append(err.dependency_cycle(spec, value))
                    continue
                try:
                    linked_valid = yield linked_id
                except _LinkFault as fault:
                    error = err.inner_validation_exception(
                        spec, value, fault.exception_type, fault.exception_message
                    )
                    self._fail(linked_id, error)
                    linked_valid = False
            if not linked_valid:
                valid = False
                self.links.setdefault(node_id, []).append(linked_id)
        if errors:
            valid = False
            self.errors[node_id] = errors
        self.valid[node_id] = valid

    def _check_literal(self, spec: InputSpec, value: Any) -> err.ErrorDict | None:
        """The error for a literal input value, or None when it is acceptable."""
        if spec.convert is not None:
            try:
                value = spec.convert(value)
            except Exception as exc:  # int()/float() raise several types; ComfyUI reports any
                return err.invalid_input_type(spec, value, exc)
            if spec.min is not None and value < spec.min:
                return err.value_smaller_than_min(spec, value)
            if spec.max is not None and value > spec.max:
                return err.value_bigger_than_max(spec, value)
            return None
        if spec.upload is not None:
            return self._check_upload(spec, value)
        # A literal on a link-typed input (no options) passes, as in ComfyUI; it fails when run.
        if spec.options is None or _in_options(spec, value):
            return None
        extras = self._extra_models(spec)
        if value in extras:
            return None
        return err.value_not_in_list(spec, value, _allowed(spec, extras))

    def _check_upload(self, spec: InputSpec, value: Any) -> err.ErrorDict | None:
        # The job's own uploads are the only files a job names by its own choice; anything
        # in another folder, annotated, absolute or traversing could be another job's file.
        if self._files is not None and isinstance(value, str) and value in self._files:
            return None
        if spec.upload == UPLOAD_ELSEWHERE or not _plain_file_value(value):
            return err.file_not_allowed(spec, value)
        if self._files is None or spec.upload not in (UPLOAD_IMAGE, UPLOAD_FILE):
            return None
        # The catalogue's list holds the files baked into the image's input folder.
        if _in_options(spec, value):
            return None
        if spec.upload == UPLOAD_IMAGE:
            return err.invalid_image_file(spec, value)
        return err.value_not_in_list(spec, value, _allowed(spec, sorted(self._files)))

    def _extra_models(self, spec: InputSpec) -> tuple[str, ...]:
        if not spec.model_kinds or not self._extras:
            return ()
        found: tuple[str, ...] = ()
        for kind in spec.model_kinds:
            found += self._extras.get(kind, ())
        return found


def _names(names: Iterable[str]) -> tuple[str, ...]:
    # A lone string is one name, not an iterable of one-letter names.
    return (names,) if isinstance(names, str) else tuple(names)


def _is_mapping(value: object) -> bool:
    # JSON objects are dicts; the ABC check is only for other mappings (and slower).
    return type(value) is dict or isinstance(value, Mapping)


def _in_options(spec: InputSpec, value: Any) -> bool:
    if spec.options_set is not None:
        try:
            return value in spec.options_set
        except TypeError:  # an unhashable value (object) is in no hashable list
            return False
    return spec.options is not None and value in spec.options


def _allowed(spec: InputSpec, extras: Iterable[str]) -> list[Any]:
    allowed = list(spec.options or ())
    allowed.extend(sorted(set(extras).difference(allowed)))
    return allowed


def _plain_file_value(value: Any) -> bool:
    return isinstance(value, str) and is_plain_file_value(value)
