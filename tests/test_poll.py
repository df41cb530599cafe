"""The poll helper itself (tests/_poll.py)."""

import itertools

import pytest

from tests._poll import poll_until


def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert poll_until(lambda: max(0, next(calls) - 2), "the third call", interval_s=0) == 1


def test_fails_naming_what_it_waited_for_and_checks_once_more_at_the_deadline() -> None:
    calls: list[int] = []
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for nothing"):
        poll_until(lambda: calls.append(1), "nothing", timeout_s=0.05, interval_s=0.01)
    assert len(calls) >= 2
