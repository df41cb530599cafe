"""The node catalogue: ComfyUI's `/object_info`, parsed once into per-class input specs."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from comfyburst.errors import ComfyBurstError
from comfyburst.preflight._model_kinds import model_kinds_for

DEFAULT_CATALOGUE_RESOURCE = "data/object_info.json"

# Upload modes of a file-picking combo input (see InputSpec.upload).
UPLOAD_IMAGE = "image"
UPLOAD_FILE = "file"
UPLOAD_ELSEWHERE = "elsewhere"

_UPLOAD_FLAGS = ("image_upload", "file_upload", "video_upload", "audio_upload")

_CONVERTERS: Mapping[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float}


class CatalogueError(ComfyBurstError):
    """The node catalogue JSON is not an `/object_info` document."""

    code = "catalogue_invalid"
    http_status = 500


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One required or optional input of a node class, ready for validation."""

    name: str
    required: bool
    type_name: str  # "COMBO" for the legacy list form
    convert: Callable[[Any], Any] | None  # int/float for INT/FLOAT, else None
    min: int | float | None
    max: int | float | None
    options: tuple[Any, ...] | None  # combo values; None when there is no list to check
    options_set: frozenset[Any] | None  # fast membership; None when a value is unhashable
    model_kinds: tuple[str, ...]
    # UPLOAD_IMAGE: LoadImage-style (checked by ComfyUI's custom validation, not the list);
    # UPLOAD_FILE: other input-folder uploads; UPLOAD_ELSEWHERE: files outside the input folder.
    upload: str | None
    config_json: str  # the input config as ComfyUI reports it in errors, [type, options]

    def input_config(self) -> list[Any]:
        """A fresh copy of the input config for an error body."""
        config: list[Any] = json.loads(self.config_json)
        return config


@dataclass(frozen=True, slots=True)
class ClassSpec:
    """One node class: its validated inputs in order, its output types, whether it is an output."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    output_node: bool


class Catalogue:
    """Immutable map of node class name to ClassSpec; build once, query per request."""

    __slots__ = ("_classes",)

    def __init__(self, classes: Mapping[str, ClassSpec]) -> None:
        self._classes: Mapping[str, ClassSpec] = MappingProxyType(dict(classes))

    @classmethod
    def from_object_info(cls, object_info: Mapping[str, Any]) -> Catalogue:
        """Parse a `GET /object_info` document."""
        if not isinstance(object_info, Mapping):
            raise CatalogueError("object_info must be a JSON object of node classes")
        classes: dict[str, ClassSpec] = {}
        for name, entry in object_info.items():
            if not isinstance(name, str) or not isinstance(entry, Mapping):
                raise CatalogueError(f"object_info entry {name!r} is not a node class object")
            try:
                classes[name] = _parse_class(name, entry)
            except (TypeError, ValueError) as exc:  # e.g. unhashable names in input_order
                raise CatalogueError(f"object_info entry {name!r} is malformed: {exc}") from exc
        return cls(classes)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> Catalogue:
        """Parse the bytes of an `/object_info` JSON document."""
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise CatalogueError(f"catalogue is not valid JSON: {exc}") from exc
        return cls.from_object_info(document)

    @classmethod
    def load_default(cls) -> Catalogue:
        """The catalogue checked in with this package (parsed once per process)."""
        return _default_catalogue()

    def get(self, class_type: str) -> ClassSpec | None:
        """The class spec, or None for a class this catalogue does not have."""
        return self._classes.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __repr__(self) -> str:
        return f"Catalogue({len(self._classes)} classes)"


@functools.cache
def _default_catalogue() -> Catalogue:
    data = resources.files("comfyburst.preflight").joinpath(DEFAULT_CATALOGUE_RESOURCE)
    return Catalogue.from_json_bytes(data.read_bytes())


@functools.lru_cache(maxsize=4096)
def types_match(received: str, expected: str) -> bool:
    """Whether an output of type `received` may feed an input of type `expected`.

    `*` on either side matches anything; comma-separated types are unions, and a union output
    fits an input only when every type it may carry is one the input takes.
    """
    if received == expected or received == "*" or expected == "*":
        return True
    received_types = {part.strip() for part in received.split(",")}
    expected_types = {part.strip() for part in expected.split(",")}
    if "*" in received_types or "*" in expected_types:
        return True
    return received_types <= expected_types


def _parse_class(name: str, entry: Mapping[str, Any]) -> ClassSpec:
    sections = entry.get("input")
    sections = sections if isinstance(sections, Mapping) else {}
    order = entry.get("input_order")
    order = order if isinstance(order, Mapping) else {}
    inputs: list[InputSpec] = []
    # Hidden inputs are filled by the server, never by the client, so they are not validated.
    for section, required in (("required", True), ("optional", False)):
        specs = sections.get(section)
        if not isinstance(specs, Mapping):
            continue
        names = order.get(section)
        if not isinstance(names, list) or set(names) != set(specs):
            names = list(specs)
        inputs.extend(_parse_input(name, str(n), specs[n], required) for n in names)
    outputs = entry.get("output")
    output_types = tuple(_type_name(t) for t in outputs) if isinstance(outputs, list) else ()
    return ClassSpec(name, tuple(inputs), output_types, entry.get("output_node") is True)


def _type_name(raw: Any) -> str:
    # The legacy combo form puts the value list where the type name goes.
    return "COMBO" if isinstance(raw, list | tuple) else str(raw)


def _number(raw: Any) -> int | float | None:
    return raw if isinstance(raw, int | float) and not isinstance(raw, bool) else None


def _parse_input(class_type: str, input_name: str, raw: Any, required: bool) -> InputSpec:
    if not isinstance(raw, list | tuple) or not raw:
        raw = [raw]
    raw_type = raw[0]
    options_dict = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    type_name = _type_name(raw_type)
    options: tuple[Any, ...] | None = None
    if isinstance(raw_type, list | tuple):
        options = tuple(raw_type)
    elif type_name == "COMBO" and isinstance(options_dict.get("options"), list):
        options = tuple(options_dict["options"])
    options_set: frozenset[Any] | None = None
    if options is not None:
        try:
            options_set = frozenset(options)
        except TypeError:
            options_set = None
    upload: str | None = None
    if any(options_dict.get(k) for k in _UPLOAD_FLAGS):
        folder = options_dict.get("image_folder", "input")
        if folder != "input":
            upload = UPLOAD_ELSEWHERE
        elif options_dict.get("image_upload"):
            upload = UPLOAD_IMAGE
        else:
            upload = UPLOAD_FILE
    convert = _CONVERTERS.get(type_name)
    return InputSpec(
        name=input_name,
        required=required,
        type_name=type_name,
        convert=convert,
        min=_number(options_dict.get("min")) if convert else None,
        max=_number(options_dict.get("max")) if convert else None,
        options=options,
        options_set=options_set,
        model_kinds=model_kinds_for(class_type, input_name) if options is not None else (),
        upload=upload,
        # ComfyUI reports an input's config as [type, options], with {} when there are none.
        config_json=json.dumps([raw_type, dict(options_dict)]),
    )
