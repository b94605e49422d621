"""Checkers for chapter 0 (solutions/toolkit.py): the products and the einops exercises.

Each checker runs the learner's function on seeded random inputs of several shapes: a
square case first (a wrong product there still has the right shape, so its values can
name the mistake), then a 1-element case, rectangular cases (where a transposed or
swapped result has the wrong shape) and one case with entries near 1e3.
"""

import einops
import torch
from torch import Tensor

from checks._core import exercise, scaled, seeded
from solutions import toolkit as ref

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

LARGE = 1e3  # the scale of the large-magnitude case


def _scaled(scale: float) -> str:
    return scaled("entries", scale)


def _randn(seed: int, *shapes: tuple[int, ...], scale: float = 1.0) -> list[Tensor]:
    gen = seeded(seed)
    return [torch.randn(shape, generator=gen) * scale for shape in shapes]


# --- The products ---------------------------------------------------------------------


@exercise(ref.matmul)
def check_matmul(check, matmul):
    for seed, (m, k, n), scale in [
        (1, (3, 3, 3), 1.0),
        (0, (1, 1, 1), 1.0),
        (2, (2, 5, 3), 1.0),
        (3, (4, 1, 6), 1.0),
        (4, (16, 32, 8), LARGE),
    ]:
        with check.case(f"A of shape ({m}, {k}), B of shape ({k}, {n})" + _scaled(scale)):
            A, B = _randn(seed, (m, k), (k, n), scale=scale)
            mistakes = {}
            if m == k == n:
                mistakes = {
                    "multiplied entry by entry (A * B, the Hadamard product); the matrix "
                    "product sums A_ik B_kj over k": A * B,
                    "computed B @ A: the matrix product does not commute": B @ A,
                    "transposed the result (wrote the output axes as n m)": (A @ B).T,
                    "transposed A (summed over A's first axis)": A.T @ B,
                    "transposed B (summed over B's last axis)": A @ B.T,
                }
            got = check.call(matmul, A, B)
            check.tensor(got, ref.matmul(A, B), what="product", mistakes=mistakes)


@exercise(ref.dot)
def check_dot(check, dot):
    for seed, shape, scale in [
        (11, (5,), 1.0),
        (10, (1,), 1.0),
        (12, (4, 6), 1.0),
        (13, (3, 3), 1.0),
        (14, (2, 3, 7), 1.0),
        (15, (6, 64), LARGE),
    ]:
        with check.case(f"x, y of shape {shape}" + _scaled(scale)):
            x, y = _randn(seed, shape, shape, scale=scale)
            mistakes = {
                "multiplied entry by entry but did not sum over the last axis": x * y,
                "summed over the first axis instead of the last": (x * y).sum(0),
                "summed over every axis: sum over the last axis only": (x * y).sum(),
            }
            if x.ndim == 2:
                mistakes["paired every x with every y (x @ yᵀ): pair matching rows only"] = x @ y.T
            got = check.call(dot, x, y)
            check.tensor(got, ref.dot(x, y), what="dot product", mistakes=mistakes)


@exercise(ref.diagonal)
def check_diagonal(check, diagonal):
    for seed, shape, scale in [
        (111, (4, 4), 1.0),
        (110, (1, 1), 1.0),
        (112, (3, 5, 5), 1.0),
        (113, (2, 3, 2, 2), 1.0),
        (114, (16, 16), LARGE),
    ]:
        with check.case(f"A of shape {shape}" + _scaled(scale)):
            (A,) = _randn(seed, shape, scale=scale)
            mistakes = {
                "summed each row: name both axes alike, and only the entries A[i, i] are "
                "read": A.sum(-1),
                "summed each column: name both axes alike, and only the entries A[i, i] are "
                "read": A.sum(-2),
                "took the anti-diagonal (A[i, n-1-i]); the diagonal is A[i, i]": A.flip(
                    -1
                ).diagonal(dim1=-2, dim2=-1),
            }
            if A.ndim > 2:
                mistakes[
                    "took the diagonal over the first two axes (torch.diagonal's default); "
                    "each matrix of the batch lives in the last two: dim1=-2, dim2=-1"
                ] = A.diagonal()
            shapes = [
                (shape, "returned a matrix; the diagonal is a vector, out[..., i] = A[..., i, i]")
            ]
            got = check.call(diagonal, A)
            expected = ref.diagonal(A)
            check.tensor(got, expected, what="diagonal", mistakes=mistakes, shapes=shapes)


@exercise(ref.trace)
def check_trace(check, trace):
    for seed, shape, scale in [
        (121, (4, 4), 1.0),
        (120, (1, 1), 1.0),
        (122, (3, 5, 5), 1.0),
        (123, (2, 3, 2, 2), 1.0),
        (124, (16, 16), LARGE),
    ]:
        with check.case(f"A of shape {shape}" + _scaled(scale)):
            (A,) = _randn(seed, shape, scale=scale)
            mistakes = {
                "summed every entry; the trace sums the diagonal only, A[i, i]": A.sum((-2, -1)),
                "summed the anti-diagonal (A[i, n-1-i]); the trace sums A[i, i]": (
                    A.flip(-1).diagonal(dim1=-2, dim2=-1).sum(-1)
                ),
            }
            shapes = [(shape[:-1], "returned the diagonal: sum it as well")]
            if A.ndim > 2:
                shapes.append(((), "summed the whole batch: one trace per matrix"))
                mistakes["summed the whole batch: one trace per matrix"] = ref.trace(A).sum()
            got = check.call(trace, A)
            check.tensor(got, ref.trace(A), what="trace", mistakes=mistakes, shapes=shapes)


@exercise(ref.frobenius_inner)
def check_frobenius_inner(check, frobenius_inner):
    # Square shapes come first: there trace(A @ B) runs and its value can be named.
    for seed, (m, n), scale in [
        (21, (3, 3), 1.0),
        (20, (1, 1), 1.0),
        (22, (4, 2), 1.0),
        (23, (2, 5), 1.0),
        (24, (24, 8), LARGE),
    ]:
        with check.case(f"A, B of shape ({m}, {n})" + _scaled(scale)):
            A, B = _randn(seed, (m, n), (m, n), scale=scale)
            entrywise = "returned the entrywise product A ⊙ B: sum its entries as well"
            mistakes = {
                entrywise: A * B,
                "returned Aᵀ B without taking its trace": A.T @ B,
                "returned A Bᵀ without taking its trace": A @ B.T,
            }
            if m == n:
                mistakes["took trace(A @ B): the Frobenius product is trace(Aᵀ B)"] = torch.trace(
                    A @ B
                )
                mistakes["summed the entries of A @ B"] = (A @ B).sum()
            shapes = [((m, n), entrywise)]
            got = check.call(frobenius_inner, A, B)
            expected = ref.frobenius_inner(A, B)
            check.tensor(got, expected, what="inner product", mistakes=mistakes, shapes=shapes)


@exercise(ref.hadamard)
def check_hadamard(check, hadamard):
    for seed, (m, n), scale in [
        (31, (3, 3), 1.0),
        (30, (1, 1), 1.0),
        (32, (2, 5), 1.0),
        (33, (7, 4), LARGE),
    ]:
        with check.case(f"A, B of shape ({m}, {n})" + _scaled(scale)):
            A, B = _randn(seed, (m, n), (m, n), scale=scale)
            mistakes = {}
            if m == n:
                mistakes = {
                    "computed the matrix product A @ B; the Hadamard product multiplies "
                    "entry by entry": A @ B,
                    "computed A @ Bᵀ; the Hadamard product multiplies entry by entry": A @ B.T,
                }
            got = check.call(hadamard, A, B)
            check.tensor(got, ref.hadamard(A, B), what="product", mistakes=mistakes)


@exercise(ref.outer)
def check_outer(check, outer):
    for seed, (m, n), scale in [
        (41, (4, 4), 1.0),
        (40, (1, 1), 1.0),
        (42, (3, 5), 1.0),
        (43, (32, 8), LARGE),
    ]:
        with check.case(f"u of shape ({m},), v of shape ({n},)" + _scaled(scale)):
            u, v = _randn(seed, (m,), (n,), scale=scale)
            transposed = "put v first: that is v uᵀ, the transpose of u vᵀ (row i belongs to u_i)"
            shapes = [
                ((), "computed the dot product uᵀ v, a number; u vᵀ is a matrix"),
                ((m,), "multiplied entry by entry; u vᵀ pairs every u_i with every v_j"),
            ]
            got = check.call(outer, u, v)
            expected = ref.outer(u, v)
            mistakes = {transposed: ref.outer(v, u)}
            check.tensor(got, expected, what="outer product", mistakes=mistakes, shapes=shapes)


@exercise(ref.bilinear_form)
def check_bilinear_form(check, bilinear_form):
    for seed, (p, q, m, n), scale in [
        (131, (4, 4, 4, 4), 1.0),
        (130, (1, 1, 1, 1), 1.0),
        (132, (3, 5, 2, 6), 1.0),
        (133, (2, 3, 4, 4), 1.0),
        (134, (8, 6, 16, 16), LARGE),
    ]:
        with check.case(
            f"x of shape ({p}, {m}), W of shape ({m}, {n}), y of shape ({q}, {n})" + _scaled(scale)
        ):
            x, W, y = _randn(seed, (p, m), (m, n), (q, n), scale=scale)
            expected = ref.bilinear_form(x, W, y)
            mistakes = {
                "returned the transpose (axes q p): row i belongs to x_i, column j to y_j": (
                    expected.T
                ),
            }
            if p == q:
                mistakes["paired x_i with y_i only: every x_i meets every y_j"] = (x @ W * y).sum(
                    -1
                )
            if m == n:
                mistakes["used Wᵀ: x_i's axis m meets W's first axis, y_j's axis n its second"] = (
                    x @ W.T @ y.T
                )
                mistakes["left W out: that is x yᵀ"] = x @ y.T
            shapes = [
                ((), "summed over p and q too: keep one number per pair (i, j)"),
                ((p, q, m, n), "kept every axis: m and n, shared by two inputs, are summed"),
            ]
            if p == q:
                shapes.append(((p,), "paired x_i with y_i only: every x_i meets every y_j"))
            got = check.call(bilinear_form, x, W, y)
            check.tensor(got, expected, what="matrix of forms", mistakes=mistakes, shapes=shapes)


@exercise(ref.query_key_dots)
def check_query_key_dots(check, query_key_dots):
    for seed, (batch, q_posn, k_posn, n_heads, d_head), scale in [
        (71, (2, 4, 4, 3, 5), 1.0),
        (70, (1, 1, 1, 1, 1), 1.0),
        (72, (3, 5, 2, 2, 4), 1.0),
        (73, (1, 6, 6, 4, 8), LARGE),
    ]:
        with check.case(
            f"batch={batch}, query_posn={q_posn}, key_posn={k_posn}, "
            f"n_heads={n_heads}, d_head={d_head}" + _scaled(scale)
        ):
            q, k = _randn(
                seed,
                (batch, q_posn, n_heads, d_head),
                (batch, k_posn, n_heads, d_head),
                scale=scale,
            )
            expected = ref.query_key_dots(q, k)
            mistakes = {
                "swapped query_posn and key_posn: row i holds query i's dot product with "
                "every key": expected.transpose(-1, -2),
            }
            shapes = [
                ((batch, q_posn, k_posn), "summed over n_heads too: each head has its scores"),
                ((batch, q_posn, n_heads), "dotted each query with its own position's key only"),
                ((batch, q_posn, k_posn, n_heads), "put n_heads last; it goes right after batch"),
            ]
            got = check.call(query_key_dots, q, k)
            check.tensor(got, expected, what="score tensor", mistakes=mistakes, shapes=shapes)


# --- einops ---------------------------------------------------------------------------


def _head_cases():
    """(seed, batch, posn, n_heads, d_head, scale) for split_heads and merge_heads."""
    return [
        (81, 2, 3, 4, 4, 1.0),
        (80, 1, 1, 1, 1, 1.0),
        (82, 2, 5, 3, 4, 1.0),
        (83, 1, 7, 12, 1, 1.0),
        (84, 3, 2, 1, 8, 1.0),
        (85, 2, 16, 12, 64, LARGE),
    ]


@exercise(ref.split_heads)
def check_split_heads(check, split_heads):
    for seed, batch, posn, n_heads, d_head, scale in _head_cases():
        d_model = n_heads * d_head
        with check.case(
            f"x of shape ({batch}, {posn}, {d_model}), n_heads={n_heads}" + _scaled(scale)
        ):
            (x,) = _randn(seed, (batch, posn, d_model), scale=scale)
            wrong_grouping = einops.rearrange(
                x, "batch posn (d_head n_heads) -> batch posn n_heads d_head", n_heads=n_heads
            )
            mistakes = {
                "grouped d_model as (d_head n_heads); head h owns the consecutive slice "
                "h*d_head ... (h+1)*d_head - 1, so it is (n_heads d_head)": wrong_grouping,
            }
            shapes = [((batch, posn, d_head, n_heads), "swapped n_heads and d_head")]
            got = check.call(split_heads, x, n_heads)
            expected = ref.split_heads(x, n_heads)
            check.tensor(got, expected, what="split tensor", mistakes=mistakes, shapes=shapes)


@exercise(ref.merge_heads)
def check_merge_heads(check, merge_heads):
    for seed, batch, posn, n_heads, d_head, scale in _head_cases():
        with check.case(f"z of shape ({batch}, {posn}, {n_heads}, {d_head})" + _scaled(scale)):
            (z,) = _randn(seed, (batch, posn, n_heads, d_head), scale=scale)
            wrong_grouping = einops.rearrange(
                z, "batch posn n_heads d_head -> batch posn (d_head n_heads)"
            )
            mistakes = {
                "merged the axes as (d_head n_heads); head h's vector must stay "
                "consecutive, so it is (n_heads d_head)": wrong_grouping,
                "summed the heads: merging concatenates them": z.sum(2),
            }
            shapes = [((batch, posn, d_head), "summed (or averaged) the heads: concatenate them")]
            got = check.call(merge_heads, z)
            check.tensor(
                got,
                ref.merge_heads(z),
                what="merged tensor",
                mistakes=mistakes,
                shapes=shapes,
            )


@exercise(ref.image_grid)
def check_image_grid(check, image_grid):
    for seed, (b, n_rows, h, w), scale in [
        (141, (6, 2, 4, 4), 1.0),
        (140, (1, 1, 1, 1), 1.0),
        (142, (6, 3, 2, 5), 1.0),
        (143, (4, 4, 3, 2), 1.0),
        (144, (5, 1, 3, 3), 1.0),
        (145, (12, 3, 8, 8), LARGE),
    ]:
        with check.case(f"images of shape ({b}, {h}, {w}), n_rows={n_rows}" + _scaled(scale)):
            (images,) = _randn(seed, (b, h, w), scale=scale)
            grid = lambda pattern, x=images, r=n_rows: einops.rearrange(x, pattern, r=r)  # noqa: E731
            mistakes = {
                "filled the grid column by column: with the batch split as (r c), grid row r is "
                "the slow index, so images 0, 1, ... go along the first row": grid(
                    "(c r) h w -> (r h) (c w)"
                ),
                "interleaved the images' pixels: merge as (r h) and (c w), the grid index "
                "slow and the pixel index fast": grid("(r c) h w -> (h r) (w c)"),
                "interleaved the pixel rows of the images: merge as (r h), grid row slow": grid(
                    "(r c) h w -> (h r) (c w)"
                ),
                "interleaved the pixel columns of the images: merge as (c w), grid column "
                "slow": grid("(r c) h w -> (r h) (w c)"),
                "made n_rows the number of grid columns; it is the number of rows": (
                    einops.rearrange(images, "(r c) h w -> (r h) (c w)", c=n_rows)
                ),
                "transposed the grid: rows of images run along the picture's width": grid(
                    "(r c) h w -> (c h) (r w)"
                ),
            }
            if h == w:
                mistakes["transposed each image: h goes with the grid rows, w with columns"] = grid(
                    "(r c) h w -> (r w) (c h)"
                )
            shapes = [
                ((b * h, w), "stacked every image in one column: n_rows rows of b / n_rows"),
                ((h, b * w), "laid every image side by side in one row"),
            ]
            got = check.call(image_grid, images, n_rows)
            expected = ref.image_grid(images, n_rows)
            check.tensor(got, expected, what="grid", mistakes=mistakes, shapes=shapes)


@exercise(ref.mean_pool)
def check_mean_pool(check, mean_pool):
    for seed, (batch, posn, d_model), scale in [
        (91, (2, 4, 4), 1.0),
        (90, (1, 1, 1), 1.0),
        (92, (3, 7, 5), 1.0),
        (93, (2, 1, 6), 1.0),
        (94, (4, 32, 16), LARGE),
    ]:
        with check.case(f"x of shape ({batch}, {posn}, {d_model})" + _scaled(scale)):
            (x,) = _randn(seed, (batch, posn, d_model), scale=scale)
            mistakes = {
                "averaged over d_model; the pool averages over posn": x.mean(-1),
                "summed over posn instead of averaging": x.sum(1),
                "took the maximum over posn instead of the mean": x.amax(1),
            }
            shapes = [
                ((batch, posn), "averaged over d_model; the pool averages over posn"),
                ((), "averaged over every axis; average over posn only"),
                ((d_model,), "averaged over batch and posn; average over posn only"),
            ]
            got = check.call(mean_pool, x)
            check.tensor(
                got, ref.mean_pool(x), what="pooled tensor", mistakes=mistakes, shapes=shapes
            )


@exercise(ref.max_pool)
def check_max_pool(check, max_pool):
    for seed, (b, h, w), k, scale in [
        (151, (2, 6, 6), 2, 1.0),
        (150, (1, 1, 1), 1, 1.0),
        (152, (3, 4, 6), 2, 1.0),
        (153, (2, 6, 3), 3, 1.0),
        (154, (2, 5, 5), 5, 1.0),
        (155, (4, 16, 16), 4, LARGE),
    ]:
        with check.case(f"images of shape ({b}, {h}, {w}), k={k}" + _scaled(scale)):
            (images,) = _randn(seed, (b, h, w), scale=scale)
            tiles = einops.rearrange(images, "b (h i) (w j) -> b h w i j", i=k, j=k)
            mistakes = {
                "pooled entries k apart instead of neighbours: split each axis as (h i), the "
                "tile index slow and the offset inside the tile fast": einops.reduce(
                    images, "b (i h) (j w) -> b h w", "max", i=k, j=k
                ),
                "averaged each tile (average pooling); max-pooling keeps its largest entry": (
                    tiles.mean((-2, -1))
                ),
                "took each tile's smallest entry; max-pooling keeps its largest": tiles.amin(
                    (-2, -1)
                ),
            }
            shapes = [
                ((b, h // k, w), "pooled along h only; pool along w as well"),
                ((b, h, w // k), "pooled along w only; pool along h as well"),
                ((b,), "took the maximum of each whole image; pool each k x k tile"),
            ]
            if (h // k, w // k) != (k, k):
                shapes.append(
                    ((b, k, k), "made k the number of tiles per side; k is a tile's size")
                )
            got = check.call(max_pool, images, k)
            expected = ref.max_pool(images, k)
            check.tensor(got, expected, what="pooled images", mistakes=mistakes, shapes=shapes)


@exercise(ref.repeat_over_batch)
def check_repeat_over_batch(check, repeat_over_batch):
    for seed, (posn, d_model), batch, scale in [
        (101, (3, 5), 3, 1.0),
        (100, (1, 1), 1, 1.0),
        (102, (4, 6), 2, 1.0),
        (103, (5, 3), 1, 1.0),
        (104, (16, 8), 4, LARGE),
    ]:
        with check.case(f"W_pos of shape ({posn}, {d_model}), batch={batch}" + _scaled(scale)):
            (W_pos,) = _randn(seed, (posn, d_model), scale=scale)
            mistakes = {
                "put the new batch axis after posn; the output is batch posn d_model": (
                    einops.repeat(W_pos, "posn d_model -> posn batch d_model", batch=batch)
                ),
            }
            shapes = [
                ((batch * posn, d_model), "stacked the copies along one axis; keep batch apart"),
                ((posn, batch * d_model), "laid the copies side by side along d_model"),
            ]
            got = check.call(repeat_over_batch, W_pos, batch)
            expected = ref.repeat_over_batch(W_pos, batch)
            check.tensor(got, expected, what="repeated tensor", mistakes=mistakes, shapes=shapes)


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
