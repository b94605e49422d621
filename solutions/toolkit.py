"""Chapter 0: the products of linear algebra, and einops to write them.

Every function is one small exercise. The products come first, from the matrix product to
a general contraction; the einops exercises after them reshape tensors the way the rest of
the course does (splitting heads, tiling, pooling, repeating); the block products come last,
because building them needs rearrange's merged axes. Plain letters (m, n, k, ...) name the
axes of abstract matrices; the course's axis names appear once the tensors mean something.
"""

import einops
from jaxtyping import Float
from torch import Tensor

# --- The products ---------------------------------------------------------------------


def matmul(A: Float[Tensor, "m k"], B: Float[Tensor, "k n"]) -> Float[Tensor, "m n"]:
    """The matrix product: (AB)_ij = sum_k A_ik B_kj."""
    # einsum spells out the formula: k appears in both inputs but not the output, so it is
    # summed; m and n survive. That one rule covers every product in this chapter.
    return einops.einsum(A, B, "m k, k n -> m n")


def dot(x: Float[Tensor, "*batch n"], y: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch"]:
    """The dot product along the last axis, x·y = sum_i x_i y_i, for every leading index."""
    # The ellipsis stands for any number of leading axes: a pair of vectors, a batch of
    # them, or a grid of them all go through the same line.
    return einops.einsum(x, y, "... n, ... n -> ...")


def diagonal(A: Float[Tensor, "*batch n n"]) -> Float[Tensor, "*batch n"]:
    """The diagonal of each square matrix in a batch: out[..., i] = A[..., i, i]."""
    # One name for both axes: einsum then reads only the entries whose two indices agree.
    return einops.einsum(A, "... n n -> ... n")


def trace(A: Float[Tensor, "*batch n n"]) -> Float[Tensor, "*batch"]:
    """The trace of each square matrix in a batch: tr(A) = sum_i A_ii."""
    # The diagonal's pattern with n left out of the output as well, so it is summed.
    return einops.einsum(A, "... n n -> ...")


def frobenius_inner(A: Float[Tensor, "m n"], B: Float[Tensor, "m n"]) -> Float[Tensor, ""]:
    """The Frobenius inner product <A, B>_F = sum_ij A_ij B_ij = trace(AᵀB)."""
    # Both axes are summed: the dot product of A and B read as long vectors.
    return einops.einsum(A, B, "m n, m n ->")


def hadamard(A: Float[Tensor, "m n"], B: Float[Tensor, "m n"]) -> Float[Tensor, "m n"]:
    """The Hadamard (entrywise) product: (A ⊙ B)_ij = A_ij B_ij."""
    # No axis is summed: every index appears in the output.
    return einops.einsum(A, B, "m n, m n -> m n")


def outer(u: Float[Tensor, " m"], v: Float[Tensor, " n"]) -> Float[Tensor, "m n"]:
    """The outer product: (u vᵀ)_ij = u_i v_j, a rank-1 matrix."""
    return einops.einsum(u, v, "m, n -> m n")


def bilinear_form(
    x: Float[Tensor, "p m"], W: Float[Tensor, "m n"], y: Float[Tensor, "q n"]
) -> Float[Tensor, "p q"]:
    """Every bilinear form x_i W y_jᵀ at once: out[i, j] = sum_mn x[i, m] W[m, n] y[j, n]."""
    # Three operands, one pattern: m and n are each shared by two inputs and summed; p and q
    # each come from one input and are kept. This is X W Yᵀ without writing the transpose.
    return einops.einsum(x, W, y, "p m, m n, q n -> p q")


def query_key_dots(
    q: Float[Tensor, "batch query_posn n_heads d_head"],
    k: Float[Tensor, "batch key_posn n_heads d_head"],
) -> Float[Tensor, "batch n_heads query_posn key_posn"]:
    """A tensor contraction: out[b, h, i, j] = sum_d q[b, i, h, d] k[b, j, h, d]."""
    # Four kinds of axis in one line: batch and n_heads are shared and kept (batched),
    # d_head is shared and summed (contracted), query_posn and key_posn each come from one
    # input (an outer product over positions). These are attention's raw scores.
    return einops.einsum(
        q,
        k,
        "batch query_posn n_heads d_head, batch key_posn n_heads d_head"
        " -> batch n_heads query_posn key_posn",
    )


# --- einops: rearrange, reduce, repeat ------------------------------------------------


def split_heads(
    x: Float[Tensor, "batch posn d_model"], n_heads: int
) -> Float[Tensor, "batch posn n_heads d_head"]:
    """Cut each d_model vector into n_heads consecutive pieces of d_head = d_model / n_heads."""
    # (n_heads d_head) with n_heads outside: head h owns the slice [h*d_head, (h+1)*d_head).
    return einops.rearrange(
        x, "batch posn (n_heads d_head) -> batch posn n_heads d_head", n_heads=n_heads
    )


def merge_heads(
    z: Float[Tensor, "batch posn n_heads d_head"],
) -> Float[Tensor, "batch posn d_model"]:
    """Concatenate the heads back into one vector per position: the inverse of split_heads."""
    return einops.rearrange(z, "batch posn n_heads d_head -> batch posn (n_heads d_head)")


def image_grid(images: Float[Tensor, "b h w"], n_rows: int) -> Float[Tensor, "H W"]:
    """Tile b images into one picture of n_rows rows of images, filled row by row.

    The picture has H = n_rows * h pixel rows and W = (b / n_rows) * w pixel columns.
    """
    # Split the batch into (r c) with the grid row r slow, then merge each grid index with the
    # pixel axis it stacks along: grid rows with pixel rows (r h), grid columns with (c w).
    return einops.rearrange(images, "(r c) h w -> (r h) (c w)", r=n_rows)


def mean_pool(x: Float[Tensor, "batch posn d_model"]) -> Float[Tensor, "batch d_model"]:
    """The average over positions: out[b] = (1/posn) sum_i x[b, i]."""
    return einops.reduce(x, "batch posn d_model -> batch d_model", "mean")


def max_pool(images: Float[Tensor, "b h w"], k: int) -> Float[Tensor, "b H W"]:
    """Max-pooling: the largest entry of each k x k tile of each image, H = h/k by W = w/k."""
    # Each pixel axis splits into (tile index, offset inside the tile), the tile index slow;
    # the offsets i and j are missing on the right, so reduce takes the max over them.
    return einops.reduce(images, "b (h i) (w j) -> b h w", "max", i=k, j=k)


def repeat_over_batch(
    W_pos: Float[Tensor, "posn d_model"], batch: int
) -> Float[Tensor, "batch posn d_model"]:
    """One copy of the position vectors for each sequence in the batch: out[b] = W_pos."""
    # A new axis named only on the right is created by copying; its size must be given.
    return einops.repeat(W_pos, "posn d_model -> batch posn d_model", batch=batch)


# --- Block matrices: products that merge axes ------------------------------------------


def kron(A: Float[Tensor, "m n"], B: Float[Tensor, "p q"]) -> Float[Tensor, "m*p n*q"]:
    """The Kronecker product: A ⊗ B is the block matrix whose block (i, j) is A_ij B."""
    # Every entry of A times every entry of B, then the row indices (i of A, r of B) merge
    # into one row index i*p + r: A's index is the slow one, so it comes first in (m p).
    products = einops.einsum(A, B, "m n, p q -> m p n q")
    return einops.rearrange(products, "m p n q -> (m p) (n q)")


def block_matmul(
    A: Float[Tensor, "r s m k"], B: Float[Tensor, "s t k n"]
) -> Float[Tensor, "r t m n"]:
    """The block product: C_rt = sum_s A_rs B_st, with A_rs = A[r, s] a matrix block."""
    # The same formula as matmul, one level up: blocks play the part of entries. The
    # order A_rs B_st matters, because blocks are matrices and do not commute.
    return einops.einsum(A, B, "r s m k, s t k n -> r t m n")
