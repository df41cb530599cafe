"""Job labels (Comfy API v2's job `metadata`): string pairs fixed at submit, listed by filter.

The rules are comfy-sdk 0.5.0's documented server limits: a key is 1 to 40 characters from
`A-Z a-z 0-9 _ - .`; a value is a string of at most 256 bytes in UTF-8 without control
characters (U+0000 to U+001F, U+007F to U+009F) or bidirectional formatting ones (U+202A to
U+202E, U+2066 to U+2069); at most 16 pairs on a job and 3 in a list filter. A job keeps its
labels as a map and as `key=value` texts (`label_pairs`), which a list query matches with
one `array-contains` (a key holds no `=`, so a text names one pair).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MAX_LABELS = 16
MAX_FILTERS = 3
MAX_KEY_CHARS = 40
MAX_VALUE_BYTES = 256
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class LabelError(ValueError):
    """A label map or filter that breaks a rule; `key` names the pair when one does."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def check_pair(key: Any, value: Any) -> tuple[str, str]:
    """One pair, checked; LabelError naming the key otherwise."""
    if not isinstance(key, str) or not _KEY.match(key):
        shown = key[:MAX_KEY_CHARS] if isinstance(key, str) else key
        raise LabelError(
            f"label key {shown!r} must be 1 to {MAX_KEY_CHARS} characters from A-Z a-z 0-9 _ - .",
            key=key[:MAX_KEY_CHARS] if isinstance(key, str) else None,
        )
    if not isinstance(value, str):
        raise LabelError(f"label {key!r}: the value must be a string", key=key)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        raise LabelError(
            f"label {key!r}: the value must be at most {MAX_VALUE_BYTES} bytes in UTF-8", key=key
        )
    if _FORBIDDEN.search(value) or not _encodable(value):
        raise LabelError(
            f"label {key!r}: the value must not hold control or bidirectional formatting "
            "characters",
            key=key,
        )
    return key, value


def check_labels(raw: Any) -> dict[str, str]:
    """A job's labels: an object of at most MAX_LABELS checked pairs (None: none)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise LabelError("labels must be an object of string values")
    if len(raw) > MAX_LABELS:
        raise LabelError(f"at most {MAX_LABELS} labels, not {len(raw)}")
    return dict(check_pair(k, v) for k, v in raw.items())


def check_filters(pairs: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """A list filter's pairs as `key=value` texts, checked (at most MAX_FILTERS, one per key)."""
    checked = [check_pair(k, v) for k, v in pairs]
    if len(checked) > MAX_FILTERS:
        raise LabelError(f"at most {MAX_FILTERS} label filters, not {len(checked)}")
    keys = [k for k, _ in checked]
    if len(set(keys)) != len(keys):
        raise LabelError("each label key may be filtered once")
    return tuple(sorted(pair_text(k, v) for k, v in checked))


def pair_text(key: str, value: str) -> str:
    return f"{key}={value}"


def label_pairs(labels: Mapping[str, str]) -> list[str]:
    """The `key=value` texts a job stores for list filters."""
    return sorted(pair_text(k, v) for k, v in labels.items())


def _encodable(value: str) -> bool:
    # A lone surrogate (JSON `"\ud800"`) is not text Firestore or a client can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
