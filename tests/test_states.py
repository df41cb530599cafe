"""The job transition table: every legal move allowed, everything else a named error."""

import itertools

import pytest

from comfyburst.errors import IllegalTransition
from comfyburst.states import TERMINAL_STATES, TRANSITIONS, JobState, check_transition

LEGAL = {
    ("queued", "starting"),
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "timed_out"),
    ("queued", "failed"),
    ("starting", "running"),
    ("starting", "queued"),
    ("starting", "failed"),
    ("starting", "cancelled"),
    ("starting", "timed_out"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "queued"),
    ("running", "cancelled"),
    ("running", "timed_out"),
}
ALL_PAIRS = list(itertools.product(JobState, JobState))


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_legal_transitions_are_allowed(current: str, target: str) -> None:
    check_transition(JobState(current), JobState(target))


@pytest.mark.parametrize(
    ("current", "target"),
    [(a, b) for a, b in ALL_PAIRS if (a.value, b.value) not in LEGAL],
    ids=lambda s: s.value,
)
def test_illegal_transitions_raise(current: JobState, target: JobState) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, target)
    assert info.value.current == current.value
    assert info.value.target == target.value


def test_table_matches_the_documented_set() -> None:
    table = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL


def test_terminal_states_are_final() -> None:
    assert {s.value for s in TERMINAL_STATES} == {"succeeded", "failed", "cancelled", "timed_out"}
    for state in TERMINAL_STATES:
        assert state.terminal and not TRANSITIONS[state]
