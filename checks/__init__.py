"""Checkers: each `check_<name>(X)` tests a learner's `X` against the reference in `solutions`.

`checks/<chapter>.py` mirrors `solutions/<chapter>.py` (or `checks/<chapter>/`, a package with a
module per topic, where a chapter has many checkers). Import a chapter's checkers with
`from checks.embeddings import *`; `reference_if_failed` and `summary` serve every chapter.
`reference_if_failed` hands back a marked stand-in for the reference (`is_fallback` tells
it apart), which no check passes.
"""

import importlib
import pkgutil

from checks._core import (
    _EXERCISES,
    CheckFailed,
    Exercise,
    is_fallback,
    reference_if_failed,
    summary,
)

__all__ = ["CheckFailed", "is_fallback", "reference_if_failed", "summary"]


def all_exercises() -> list[Exercise]:
    """Every chapter's exercises, each chapter's checkers imported first (which registers
    them), chapter by chapter in the order its module registers them."""
    chapters = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    for chapter in chapters:
        importlib.import_module(f"checks.{chapter}")
    return [ex for chapter in chapters for ex in _EXERCISES.get(chapter, [])]
