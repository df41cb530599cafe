"""The JSON rules of the API (domain/json_safety.py): what a request may carry, how answers
stay bounded."""

from __future__ import annotations

import json

import pytest

from comfyburst.domain.json_safety import (
    TRUNCATED,
    bounded_mapping,
    check_json,
    clip_to,
    json_size,
    parse_float,
)
from comfyburst.errors import InvalidJson


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("data", "why", "field"),
    [
        (
            {"workflow": {"1": {"inputs": {"text": "a\ud800b"}}}},
            "surrogate",
            "workflow.1.inputs.text",
        ),
        ({"workflow": {"\udfff": {}}}, "surrogate", "workflow"),
        ({"x": [1.0, float("inf")]}, "finite", "x.1"),
        ({"x": float("nan")}, "finite", "x"),
        (_nested(65), "deeper than 64", None),
    ],
)
def test_refused_values_name_their_field(data: object, why: str, field: str | None) -> None:
    with pytest.raises(InvalidJson) as caught:
        check_json(data)
    assert why in caught.value.message
    if field is not None:
        assert caught.value.field == field


def test_what_comfyui_takes_passes() -> None:
    check_json({"seed": 2**64 - 1, "cfg": 7.5, "text": "héllo 🌄", "deep": _nested(60)})


def test_a_number_beyond_a_double_is_refused_at_parse_time() -> None:
    with pytest.raises(ValueError, match="out of range"):
        json.loads('{"x": 1e400}', parse_float=parse_float)
    assert json.loads('{"x": 1e300}', parse_float=parse_float) == {"x": 1e300}


def test_clip_to_fits_any_value_in_its_budget() -> None:
    huge = {"k" * 5000: ["v" * 100_000] * 500, "nested": _nested(200), "big": 2**80}
    for budget in (300, 5_000, 50_000):
        clipped = clip_to(huge, budget)
        assert json_size(clipped) <= budget
    assert TRUNCATED in json.dumps(clip_to(huge, 50_000), ensure_ascii=False)


def test_bounded_mapping_keeps_whole_entries_in_order_and_counts_the_rest() -> None:
    entries = {str(i): {"errors": [{"details": "x" * 3000}]} for i in range(100)}
    kept, omitted = bounded_mapping(entries, 20_000)
    assert json_size(kept) <= 20_000
    assert list(kept) == [str(i) for i in range(len(kept))]
    assert omitted == 100 - len(kept) and 0 < len(kept) < 100
    assert bounded_mapping({"a": 1}, 1000) == ({"a": 1}, 0)
