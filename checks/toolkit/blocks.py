"""The checkers of chapter 0's block matrices: the Kronecker product and block matmul."""

import einops
import torch

from checks._core import exercise
from checks.toolkit._common import LARGE, _randn, _scaled
from solutions import toolkit as ref

# --- Block matrices ---------------------------------------------------------------------


@exercise(ref.kron)
def check_kron(check, kron):
    for seed, (m, n), (p, q), scale in [
        (51, (2, 2), (2, 2), 1.0),
        (50, (1, 1), (1, 1), 1.0),
        (52, (2, 3), (4, 5), 1.0),
        (53, (3, 1), (1, 2), 1.0),
        (54, (4, 3), (3, 4), LARGE),
    ]:
        with check.case(f"A of shape ({m}, {n}), B of shape ({p}, {q})" + _scaled(scale)):
            A, B = _randn(seed, (m, n), (p, q), scale=scale)
            products = einops.einsum(A, B, "m n, p q -> m p n q")
            mistakes = {
                "swapped the factors (B ⊗ A): block (i, j) of A ⊗ B is A_ij B, so A's "
                "indices are the outer (slow) ones, grouped as (m p) and (n q)": torch.kron(B, A),
                "grouped the axes as (m n) (p q), which lays out the outer product of the "
                "flattened matrices; rows pair a row of A with a row of B: (m p) (n q)": (
                    einops.rearrange(products, "m p n q -> (m n) (p q)")
                ),
                "grouped the columns as (q n); A's index comes first: (n q)": (
                    einops.rearrange(products, "m p n q -> (m p) (q n)")
                ),
                "grouped the rows as (p m); A's index comes first: (m p)": (
                    einops.rearrange(products, "m p n q -> (p m) (n q)")
                ),
            }
            got = check.call(kron, A, B)
            check.tensor(got, ref.kron(A, B), what="Kronecker product", mistakes=mistakes)


@exercise(ref.block_matmul)
def check_block_matmul(check, block_matmul):
    for seed, (r, s, t), (m, k, n), scale in [
        (61, (2, 2, 2), (3, 3, 3), 1.0),
        (60, (1, 1, 1), (1, 1, 1), 1.0),
        (62, (2, 3, 2), (2, 4, 3), 1.0),
        (63, (2, 2, 2), (4, 4, 4), LARGE),
    ]:
        with check.case(
            f"a {r}×{s} grid of ({m}, {k}) blocks times a {s}×{t} grid of ({k}, {n}) blocks"
            + _scaled(scale)
        ):
            A, B = _randn(seed, (r, s, m, k), (s, t, k, n), scale=scale)
            mistakes = {}
            if m == k == n:
                mistakes[
                    "multiplied each pair of blocks in the wrong order (B_st A_rs); "
                    "blocks are matrices and do not commute"
                ] = einops.einsum(B, A, "s t a c, r s c d -> r t a d")
                mistakes[
                    "multiplied the blocks entry by entry; each block pair needs a matrix product"
                ] = einops.einsum(A, B, "r s m n, s t m n -> r t m n")
            if r == s == t:
                mistakes[
                    "multiplied only matching blocks (A_rt B_rt); block (r, t) is the "
                    "sum over s of A_rs B_st"
                ] = einops.einsum(A, B, "r t m k, r t k n -> r t m n")
                mistakes["transposed the grid of blocks (wrote the output as t r)"] = einops.einsum(
                    A, B, "r s m k, s t k n -> t r m n"
                )
            got = check.call(block_matmul, A, B)
            check.tensor(got, ref.block_matmul(A, B), what="block product", mistakes=mistakes)
