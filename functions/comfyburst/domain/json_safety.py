"""JSON a request may carry, and JSON an answer may grow to. Pure, no I/O.

`check_json` refuses, with the path of the first offending value, what the JSON parser lets
through but nothing downstream can store or serialise: lone UTF-16 surrogates, numbers that do
not fit a double (`1e400`), and nesting deeper than `MAX_JSON_DEPTH` (pydantic and the stores
give up long before Python's recursion limit). Huge integers stay accepted: ComfyUI takes them
(seeds up to 2**64) and the request is stored as a JSON object in GCS, not in Firestore.

`clip` makes any JSON value fit a byte budget: long strings and lists are cut, deep values
replaced, with a marker saying so, so an answer never grows past a bound.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from comfyburst.errors import InvalidJson

MAX_JSON_DEPTH = 64
TRUNCATED = "…(truncated)"
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_float(text: str) -> float:
    """The json module's float hook: a number beyond a double is refused, not made infinite."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json_body(body: bytes) -> Any:
    """A request body as JSON, the one rule of every route: InvalidJson (400 `invalid_json`)
    for bytes that are not JSON, for `NaN`/`Infinity`, numbers beyond a double, nesting the
    parser gives up on (RecursionError is not a ValueError) and what `check_json` refuses."""
    try:
        data = json.loads(body, parse_constant=_reject_constant, parse_float=parse_float)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidJson(f"the request body is not valid JSON: {str(exc)[:200]}") from None
    check_json(data)
    return data


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and they cannot be stored.
    raise ValueError(f"{name} is not JSON")


def check_json(data: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise InvalidJson (naming the field) for a value nothing downstream can take."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise _refused("holds a lone UTF-16 surrogate", path)
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _refused("is not a finite number", path)
            continue
        if isinstance(value, dict | list):
            if len(path) >= max_depth:
                raise _refused(f"is nested deeper than {max_depth} levels", path)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    raise _refused("has a key with a lone UTF-16 surrogate", path)
                stack.append((item, (*path, key)))


def _refused(why: str, path: tuple[Any, ...]) -> InvalidJson:
    field = field_path(path)
    return InvalidJson(f"{field or 'the request'} {why}", field=field)


def field_path(path: tuple[Any, ...], max_chars: int = 200) -> str | None:
    """A dotted field path, cut to `max_chars` (keys come from the caller)."""
    if not path:
        return None
    text = ".".join(_safe_text(part, 64) for part in path)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _safe_text(part: Any, max_chars: int) -> str:
    text = str(part)
    if not text.isascii():
        text = _SURROGATE.sub("\ufffd", text)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def clip(value: Any, *, max_string: int = 1000, max_items: int = 100, max_depth: int = 12) -> Any:
    """A copy of a JSON value with strings, lists, objects and depth bounded (marked)."""
    return _clip(value, max_string, max_items, max_depth)


def _clip(value: Any, max_string: int, max_items: int, depth: int) -> Any:
    if isinstance(value, str):
        if not value.isascii():  # a lone surrogate cannot be encoded, stored or sent
            value = _SURROGATE.sub("\ufffd", value)
        return value if len(value) <= max_string else value[:max_string] + TRUNCATED
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return str(value)  # beyond what Firestore and JavaScript clients hold exactly
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and Infinity are not JSON
    if isinstance(value, tuple):
        value = list(value)
    if value is not None and not isinstance(value, dict | list | str | int | float):
        return _clip(str(value), max_string, max_items, depth)  # not a JSON value: its text
    if not isinstance(value, dict | list):
        return value
    if depth <= 0:
        return TRUNCATED
    if isinstance(value, list):
        kept = [_clip(v, max_string, max_items, depth - 1) for v in value[:max_items]]
        if len(value) > max_items:
            kept.append(f"{TRUNCATED} {len(value) - max_items} more")
        return kept
    result: dict[str, Any] = {}
    for index, (key, item) in enumerate(value.items()):
        if index >= max_items:
            result[TRUNCATED] = f"{len(value) - max_items} more"
            break
        result[_safe_text(key, max_string)] = _clip(item, max_string, max_items, depth - 1)
    return result


def clip_to(value: Any, max_bytes: int) -> Any:
    """`clip` with tighter bounds until the JSON fits `max_bytes` (a marker string if never)."""
    for max_string, max_items, max_depth in ((1000, 100, 12), (200, 20, 8), (60, 5, 5)):
        clipped = clip(value, max_string=max_string, max_items=max_items, max_depth=max_depth)
        if json_size(clipped) <= max_bytes:
            return clipped
    return TRUNCATED


def compact_json(value: Any) -> str:
    """Compact JSON text of a clipped value: the form stores keep JSON someone else made."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def stored_json(value: Any, max_bytes: int) -> str:
    """`value` as the stores keep what ComfyUI or a worker sent: compact JSON text, clipped
    to `max_bytes`. Text, because Firestore takes no array in an array, no `__x__` or empty
    key, no nesting past 20 levels and no integer past 64 bits, and such JSON is legal."""
    return compact_json(clip_to(value, max_bytes))


def bounded_mapping(mapping: dict[str, Any], max_bytes: int) -> tuple[dict[str, Any], int]:
    """The entries of `mapping`, each clipped, in order, that fit `max_bytes` together, and
    how many entries were left out."""
    kept: dict[str, Any] = {}
    used = 2  # the braces
    for index, (key, entry) in enumerate(mapping.items()):
        key = _safe_text(key, 200)
        item = clip(entry)
        size = json_size({key: item}) - 1  # the entry and its comma
        if used + size > max_bytes:
            item = clip(entry, max_string=100, max_items=10, max_depth=6)
            size = json_size({key: item}) - 1
            if used + size > max_bytes:
                return kept, len(mapping) - index
        kept[key] = item
        used += size
    return kept, 0
