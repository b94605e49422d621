"""The course's offline corpus: the Python Language Reference help topics (see data/README.md)."""

from functools import cache
from importlib.resources import files


@cache
def load_corpus() -> str:
    """The whole corpus as one string (about 465,000 characters)."""
    return files("course").joinpath("data/python_reference.txt").read_text(encoding="utf-8")
