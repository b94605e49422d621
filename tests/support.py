"""Helpers for tests: of checkers (a checker must reject each mistake and accept each variant),
and fake books for the English corpus's builder."""

import hashlib

import pytest

from checks import CheckFailed
from course.models.build_corpus import clean


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


def fake_books(src, texts: dict[int, str], validation: set[int]) -> list[dict]:
    """Write each text to src/<number>.txt; return a BOOKS list of them with their hashes."""
    src.mkdir()
    books = []
    for number, text in texts.items():
        (src / f"{number}.txt").write_text(text, encoding="utf-8")
        books.append(
            {"id": number, "title": f"Book {number}", "author": "A", "year": 1900,
             "split": "validation" if number in validation else "train",
             "sha256": hashlib.sha256(text.encode()).hexdigest(),
             "text_sha256": hashlib.sha256(clean(text).encode()).hexdigest()}
        )  # fmt: skip
    return books
