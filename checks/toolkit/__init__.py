"""Checkers for chapter 0 (solutions/toolkit.py): the products and the einops exercises.

Each checker runs the learner's function on seeded random inputs of several shapes: a
square case first (a wrong product there still has the right shape, so its values can
name the mistake), then a 1-element case, rectangular cases (where a transposed or
swapped result has the wrong shape) and one case with entries near 1e3.
"""

# In the order the chapter teaches them: the order of import is the order `summary` lists.
# isort: off
from checks.toolkit.products import (
    check_bilinear_form,
    check_diagonal,
    check_dot,
    check_frobenius_inner,
    check_hadamard,
    check_matmul,
    check_outer,
    check_query_key_dots,
    check_trace,
)
from checks.toolkit.rearrange import (
    check_image_grid,
    check_max_pool,
    check_mean_pool,
    check_merge_heads,
    check_repeat_over_batch,
    check_split_heads,
)
from checks.toolkit.blocks import check_block_matmul, check_kron
# isort: on

__all__ = [
    "check_matmul",
    "check_dot",
    "check_diagonal",
    "check_trace",
    "check_frobenius_inner",
    "check_hadamard",
    "check_outer",
    "check_bilinear_form",
    "check_query_key_dots",
    "check_split_heads",
    "check_merge_heads",
    "check_image_grid",
    "check_mean_pool",
    "check_max_pool",
    "check_repeat_over_batch",
    "check_kron",
    "check_block_matmul",
]
