"""Checkers for chapter 5b's circuits (solutions/circuits.py).

Models are attention-only with every parameter random, biases included (a zero bias hides
a forgotten bias path), on two shapes: d_model = n_heads·d_head, and one where they differ.
Patterns are random causal patterns, not uniform ones (on a uniform pattern many wrong
diagonals average the same).
"""

from checks.circuits._common import SQUARE as SQUARE
from checks.circuits._common import _diagonal_mean as _diagonal_mean
from checks.circuits._common import _patterns as _patterns
from checks.circuits._common import random_model as random_model
from checks.circuits.paths import _path_mistakes as _path_mistakes

# In the order the chapter teaches them: the order of import is the order `summary` lists.
# isort: off
from checks.circuits.paths import check_path_expansion_logits, check_skip_trigrams
from checks.circuits.induction import (
    check_attention_pattern_score,
    check_induction_score,
    check_composition_scores,
    check_ov_copying_score,
)
# isort: on

__all__ = [
    "check_path_expansion_logits",
    "check_skip_trigrams",
    "check_attention_pattern_score",
    "check_induction_score",
    "check_composition_scores",
    "check_ov_copying_score",
]
