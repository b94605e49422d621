"""Helpers for tests of checkers: a checker must reject each mistake and accept each variant."""

import pytest

from checks import CheckFailed


def assert_rejects(checker, learner, *fragments: str) -> str:
    """The checker fails `learner` with a `CheckFailed` whose message holds every fragment."""
    with pytest.raises(CheckFailed) as failure:
        checker(learner)
    message = str(failure.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message:\n{message}"
    return message


def assert_accepts(checker, learner, capsys) -> None:
    """The checker passes `learner` and prints its one success line."""
    checker(learner)
    out = capsys.readouterr().out
    assert out.startswith("✓ ") and " passed " in out, out
