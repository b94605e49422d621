"""The course's offline corpus: the Python Language Reference help topics (see data/README.md)."""

from functools import cache
from pathlib import Path

DATA = Path(__file__).parent / "data"


@cache
def load_corpus() -> str:
    """The whole corpus as one string (about 465,000 characters)."""
    return (DATA / "python_reference.txt").read_text(encoding="utf-8")
