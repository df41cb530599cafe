"""The one rule for query-string arguments (domain/query_args.py): each given at most once,
as the job list, the usage report and a job's long poll apply it (400 naming the argument)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from comfyburst.domain import usage
from comfyburst.domain.query_args import single_arg
from comfyburst.errors import InvalidRequest
from comfyburst.services import job_list
from comfyburst.services.job_wait import parse_wait_s

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)


def test_one_value_or_none() -> None:
    assert single_arg({"a": ["1"]}, "a") == "1"
    assert single_arg({}, "a") is None
    with pytest.raises(InvalidRequest, match="a may be given once") as twice:
        single_arg({"a": ["1", "2"]}, "a")
    assert twice.value.field == "a"


@pytest.mark.parametrize(
    ("parse", "name"),
    [
        (lambda args: parse_wait_s(args), "wait_s"),
        (lambda args: usage.parse_query(args, NOW, "key:a", all_callers=False), "group_by"),
        (lambda args: usage.parse_query(args, NOW, "key:a", all_callers=False), "from"),
        (lambda args: job_list.parse_query(args, "key:a", token_key=b"k" * 32), "page_size"),
        (lambda args: job_list.parse_query(args, "key:a", token_key=b"k" * 32), "page_token"),
    ],
)
def test_every_get_refuses_an_argument_given_twice(parse, name: str) -> None:
    with pytest.raises(InvalidRequest, match=f"{name} may be given once") as twice:
        parse({name: ["1", "2"]})
    assert twice.value.field == name
