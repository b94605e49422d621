"""Checkers: each `check_<name>(X)` tests a learner's `X` against the reference in `solutions`.

`checks/<chapter>.py` mirrors `solutions/<chapter>.py`. Import a chapter's checkers with
`from checks.embeddings import *`; `reference_if_failed` and `summary` serve every chapter.
"""

from checks._core import CheckFailed, reference_if_failed, summary

__all__ = ["CheckFailed", "reference_if_failed", "summary"]
