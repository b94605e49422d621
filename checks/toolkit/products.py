"""The checkers of chapter 0's products: matmul, dot, diagonal, trace, the Frobenius inner
product, hadamard, outer, the bilinear form, and the query-key dots of attention."""

import torch

from checks._core import exercise
from checks.toolkit._common import LARGE, _randn, _scaled
from solutions import toolkit as ref

# A batch of one loses its axis to a bare .squeeze(), which drops every axis of size 1.
SQUEEZED = (
    "squeezed away a leading axis of size 1 (.squeeze() drops every axis of size 1): "
    "keep every leading axis, one result per vector or matrix"
)

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
        (16, (1, 4), 1.0),
        (15, (6, 64), LARGE),
    ]:
        with check.case(f"x, y of shape {shape}" + _scaled(scale)):
            x, y = _randn(seed, shape, shape, scale=scale)
            mistakes = {}
            if 1 in shape[:-1]:  # named before "summed over every axis", which looks the same
                mistakes[SQUEEZED] = ref.dot(x, y).squeeze()
            mistakes |= {
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
        (125, (1, 3, 3), 1.0),
        (124, (16, 16), LARGE),
    ]:
        with check.case(f"A of shape {shape}" + _scaled(scale)):
            (A,) = _randn(seed, shape, scale=scale)
            mistakes = {}
            if 1 in shape[:-2]:  # named before "summed the whole batch", which looks the same
                mistakes[SQUEEZED] = ref.trace(A).squeeze()
            mistakes |= {
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
            if d_head > 1:
                mistakes[
                    "divided by sqrt(d_head): attention scales its scores later; these are the "
                    "raw dot products"
                ] = expected / d_head**0.5
            shapes = [
                ((batch, q_posn, k_posn), "summed over n_heads too: each head has its scores"),
                ((batch, q_posn, n_heads), "dotted each query with its own position's key only"),
                ((batch, q_posn, k_posn, n_heads), "put n_heads last; it goes right after batch"),
            ]
            got = check.call(query_key_dots, q, k)
            check.tensor(got, expected, what="score tensor", mistakes=mistakes, shapes=shapes)
