"""Checkers: each `check_<name>(X)` tests a learner's `X` against the reference in `solutions`.

`checks/<chapter>.py` mirrors `solutions/<chapter>.py` (or `checks/<chapter>/`, a package with a
module per topic, where a chapter has many checkers). Import a chapter's checkers with
`from checks.embeddings import *`; `reference_if_failed` and `summary` serve every chapter.
`reference_if_failed` hands back a marked stand-in for the reference (`is_fallback` tells
it apart), which no check passes. A check fails with `CheckFailed`, or one of its kinds:
`NotStarted` (the code still raises NotImplementedError) or `HandedReference` (the stand-in).
"""

import importlib
import pkgutil
from typing import TYPE_CHECKING

from checks._verdicts import CheckFailed, HandedReference, NotStarted

if TYPE_CHECKING:
    from checks._core import Exercise

__all__ = [
    "CheckFailed",
    "HandedReference",
    "NotStarted",
    "is_fallback",
    "reference_if_failed",
    "summary",
]
_MACHINERY = ("is_fallback", "reference_if_failed", "summary")


def __getattr__(name: str):
    # The machinery imports torch on first use, so that the grader, which reads only
    # the verdicts (checks._verdicts), starts without it.
    if name in _MACHINERY:
        from checks import _core

        return getattr(_core, name)
    raise AttributeError(f"module 'checks' has no attribute {name!r}")


def all_exercises() -> "list[Exercise]":
    """Every chapter's exercises, each chapter's checkers imported first (which registers
    them), chapter by chapter in the order its module registers them."""
    from checks._core import _EXERCISES

    chapters = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    for chapter in chapters:
        importlib.import_module(f"checks.{chapter}")
    return [ex for chapter in chapters for ex in _EXERCISES.get(chapter, [])]
