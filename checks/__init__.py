"""Checkers: each `check_<name>(X)` tests a learner's `X` against the reference in `solutions`.

`checks/<chapter>.py` mirrors `solutions/<chapter>.py` (or `checks/<chapter>/`, a package with a
module per topic, where a chapter has many checkers). Import a chapter's checkers with
`from checks.embeddings import *`; `reference_if_failed` and `summary` serve every chapter.
`reference_if_failed` hands back a marked stand-in for the reference (`is_fallback` tells
it apart), which no check passes.
"""

from checks._core import CheckFailed, is_fallback, reference_if_failed, summary

__all__ = ["CheckFailed", "is_fallback", "reference_if_failed", "summary"]
