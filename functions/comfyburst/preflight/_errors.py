"""ComfyUI-shaped error objects: `{"type", "message", "details", "extra_info"}`.

Types, messages and details follow what a real ComfyUI 0.3.64 answered in
tests/test_data/comfyui_api/prompt_errors.json. The few marked "ours" were not captured there.
"""

from __future__ import annotations

from typing import Any

from comfyburst.preflight._catalogue import InputSpec

ErrorDict = dict[str, Any]


def _error(type_: str, message: str, details: str, extra_info: dict[str, Any]) -> ErrorDict:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info}


def no_prompt() -> ErrorDict:
    return _error("no_prompt", "No prompt provided", "No prompt provided", {})


def prompt_not_object(prompt: object) -> ErrorDict:
    """Ours: the prompt value is JSON but not an object of nodes."""
    kind = type(prompt).__name__
    return _error(
        "invalid_prompt",
        "Cannot execute because the prompt is not an object of nodes.",
        f"prompt is a {kind}",
        {},
    )


def missing_class_type(node_id: object) -> ErrorDict:
    return _error(
        "invalid_prompt",
        "Cannot execute because a node is missing the class_type property.",
        f"Node ID '#{node_id}'",
        {},
    )


def unknown_class_type(node_id: object, class_type: object) -> ErrorDict:
    return _error(
        "invalid_prompt",
        f"Cannot execute because node {class_type} does not exist.",
        f"Node ID '#{node_id}'",
        {},
    )


def no_outputs() -> ErrorDict:
    return _error("prompt_no_outputs", "Prompt has no outputs", "", {})


def outputs_failed() -> ErrorDict:
    return _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "", {})


def required_input_missing(input_name: str) -> ErrorDict:
    return _error(
        "required_input_missing",
        "Required input is missing",
        input_name,
        {"input_name": input_name},
    )


def bad_linked_input(spec: InputSpec, value: Any) -> ErrorDict:
    """Ours: a list value that is not a [node_id, output_index] pair."""
    return _error(
        "bad_linked_input",
        "Linked input must be a two-item list [node_id, output_index]",
        f"{spec.name}, {value}",
        {"input_name": spec.name, "input_config": spec.input_config(), "received_value": value},
    )


def return_type_mismatch(spec: InputSpec, received_type: str, link: list[Any]) -> ErrorDict:
    return _error(
        "return_type_mismatch",
        "Return type mismatch between linked nodes",
        f"{spec.name}, received_type({received_type}) mismatch input_type({spec.type_name})",
        {
            "input_name": spec.name,
            "input_config": spec.input_config(),
            "received_type": received_type,
            "linked_node": list(link),
        },
    )


def dependency_cycle(spec: InputSpec, link: list[Any]) -> ErrorDict:
    """Ours: the link closes a loop, so the graph can never run."""
    return _error(
        "dependency_cycle",
        "Dependency cycle between linked nodes",
        f"{spec.name}, linked node {link[0]} depends on this node",
        {"input_name": spec.name, "linked_node": list(link)},
    )


def inner_validation_exception(
    spec: InputSpec, link: list[Any], exception_type: str, exception_message: str
) -> ErrorDict:
    """A linked node that could not be validated; reported under that node, with our input.

    ComfyUI's body also carries its own Python traceback; we have none, so `traceback` is empty.
    """
    return _error(
        "exception_during_inner_validation",
        "Exception when validating inner node",
        exception_message,
        {
            "input_name": spec.name,
            "input_config": spec.input_config(),
            "exception_message": exception_message,
            "exception_type": exception_type,
            "traceback": [],
            "linked_node": list(link),
        },
    )


def validation_exception(exception_type: str, exception_message: str) -> ErrorDict:
    """Ours (not captured): an output node that could not be validated at all."""
    return _error(
        "exception_during_validation",
        "Exception when validating node",
        exception_message,
        {"exception_type": exception_type, "traceback": []},
    )


def invalid_input_type(spec: InputSpec, value: Any, exc: Exception) -> ErrorDict:
    return _error(
        "invalid_input_type",
        f"Failed to convert an input value to a {spec.type_name} value",
        f"{spec.name}, {value}, {exc}",
        {
            "input_name": spec.name,
            "input_config": spec.input_config(),
            "received_value": value,
            "exception_message": str(exc),
        },
    )


def value_smaller_than_min(spec: InputSpec, value: Any) -> ErrorDict:
    return _error(
        "value_smaller_than_min",
        f"Value {value} smaller than min of {spec.min}",
        spec.name,
        {"input_name": spec.name, "input_config": spec.input_config(), "received_value": value},
    )


def value_bigger_than_max(spec: InputSpec, value: Any) -> ErrorDict:
    return _error(
        "value_bigger_than_max",
        f"Value {value} bigger than max of {spec.max}",
        spec.name,
        {"input_name": spec.name, "input_config": spec.input_config(), "received_value": value},
    )


def value_not_in_list(spec: InputSpec, value: Any, allowed: list[Any]) -> ErrorDict:
    """`allowed` is what the node would offer: the catalogue's values plus the job's files."""
    config = spec.input_config()
    if spec.options is not None and len(allowed) != len(spec.options):
        if isinstance(config[0], list):
            config[0] = list(allowed)
        elif isinstance(config[1], dict):
            config[1]["options"] = list(allowed)
    return _error(
        "value_not_in_list",
        "Value not in list",
        f"{spec.name}: '{value}' not in {allowed!r}",
        {"input_name": spec.name, "input_config": config, "received_value": value},
    )


def invalid_image_file(spec: InputSpec, value: Any) -> ErrorDict:
    return _error(
        "custom_validation_failed",
        "Custom validation failed for node",
        f"{spec.name} - Invalid image file: {value}",
        {"input_name": spec.name},
    )


def file_not_allowed(spec: InputSpec, value: Any) -> ErrorDict:
    """Ours: a file value that could name another job's file (ComfyUI would look for it)."""
    return _error(
        "custom_validation_failed",
        "Custom validation failed for node",
        f"{spec.name} - File not available to this job: {value} (name one of the job's "
        "inputs or a file baked into the image; annotated, absolute and '..' names are refused)",
        {"input_name": spec.name},
    )
