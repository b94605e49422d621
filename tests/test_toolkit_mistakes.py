"""The chapter 0 checkers name real mistakes: one table, a mistake a row, each with the words
the verdict must say."""

import einops
import pytest
import torch
import torch.nn.functional as F

from checks import toolkit as checks
from tests.support import assert_rejects


def checker(name):
    return getattr(checks, f"check_{name}")


# --- Real mistakes, each named ----------------------------------------------------------


def kron_grouped(pattern):
    def learner(A, B):
        return einops.rearrange(einops.einsum(A, B, "m n, p q -> m p n q"), pattern)

    return learner


def split_grouped(x, n_heads):
    return einops.rearrange(x, "b p (d_head n_heads) -> b p n_heads d_head", n_heads=n_heads)


MISTAKES = {
    "matmul: Hadamard instead": ("matmul", lambda A, B: A * B, "Hadamard"),
    "matmul: B @ A": ("matmul", lambda A, B: B @ A, "does not commute"),
    "matmul: output axes as n m": (
        "matmul",
        lambda A, B: einops.einsum(A, B, "m k, k n -> n m"),
        "transposed the result",
    ),
    "matmul: A^T B": ("matmul", lambda A, B: A.T @ B, "transposed A"),
    "dot: summed everything": ("dot", lambda x, y: (x * y).sum(), "summed over every axis"),
    "dot: bare squeeze loses a batch of one": (
        "dot",
        lambda x, y: (x[..., None, :] @ y[..., :, None]).squeeze(),
        "squeezed away a leading axis of size 1",
    ),
    "trace: bare squeeze loses a batch of one": (
        "trace",
        lambda A: A.diagonal(dim1=-2, dim2=-1).sum(-1).squeeze(),
        "squeezed away a leading axis of size 1",
    ),
    # A wrong number (a 0-dim result) is shown, not turned into an error of the checker's own.
    "trace: mean of the diagonal": (
        "trace",
        lambda A: A.diagonal(dim1=-2, dim2=-1).mean(-1),
        "times 0.25: look for an extra or missing scale factor",
    ),
    "frobenius_inner: mean": (
        "frobenius_inner",
        lambda A, B: (A * B).mean(),
        "times 0.1111: look for an extra or missing scale factor",
    ),
    "query_key_dots: scaled": (
        "query_key_dots",
        lambda q, k: torch.einsum("bihd,bjhd->bhij", q, k) / q.shape[-1] ** 0.5,
        "divided by sqrt(d_head)",
    ),
    "dot: no sum": ("dot", lambda x, y: x * y, "did not sum over the last axis"),
    "dot: summed the first axis": ("dot", lambda x, y: (x * y).sum(0), "summed over the first"),
    "dot: every pair": (
        "dot",
        lambda x, y: x @ y.mT if x.ndim > 1 else x @ y,
        "paired every x with every y",
    ),
    "frobenius_inner: trace(AB)": (
        "frobenius_inner",
        lambda A, B: torch.trace(A @ B),
        "took trace(A @ B)",
    ),
    "frobenius_inner: A^TB, no trace": (
        "frobenius_inner",
        lambda A, B: A.T @ B,
        "without taking its trace",
    ),
    "frobenius_inner: no sum": ("frobenius_inner", lambda A, B: A * B, "entrywise product"),
    "frobenius_inner: a float": (
        "frobenius_inner",
        lambda A, B: (A * B).sum().item(),
        "got a float",
    ),
    "hadamard: matrix product": ("hadamard", lambda A, B: A @ B, "matrix product A @ B"),
    "outer: v u^T": ("outer", lambda u, v: torch.outer(v, u), "transpose of u vᵀ"),
    "outer: output axes as n m": (
        "outer",
        lambda u, v: einops.einsum(u, v, "m, n -> n m"),
        "transpose of u vᵀ",
    ),
    "outer: dot product": ("outer", lambda u, v: u @ v, "dot product"),
    "outer: entrywise": ("outer", lambda u, v: u * v, "entry by entry"),
    "diagonal: row sums": ("diagonal", lambda A: A.sum(-1), "summed each row"),
    "diagonal: anti-diagonal": (
        "diagonal",
        lambda A: A.flip(-1).diagonal(dim1=-2, dim2=-1),
        "anti-diagonal",
    ),
    "diagonal: torch.diagonal's default axes": (
        "diagonal",
        lambda A: torch.diagonal(A),
        "first two axes",
    ),
    "diagonal: the diagonal matrix": (
        "diagonal",
        lambda A: A * torch.eye(A.shape[-1]),
        "returned a matrix",
    ),
    "trace: every entry": ("trace", lambda A: A.sum((-2, -1)), "summed every entry"),
    "trace: no sum": ("trace", lambda A: A.diagonal(dim1=-2, dim2=-1), "sum it as well"),
    "trace: whole batch": (
        "trace",
        lambda A: A.diagonal(dim1=-2, dim2=-1).sum(),
        "one trace per matrix",
    ),
    "trace: torch.trace on a batch": ("trace", torch.trace, "raised RuntimeError"),
    "bilinear_form: transposed output": (
        "bilinear_form",
        lambda x, W, y: (x @ W @ y.T).T,
        "returned the transpose",
    ),
    "bilinear_form: W transposed": ("bilinear_form", lambda x, W, y: x @ W.T @ y.T, "used Wᵀ"),
    "bilinear_form: W left out": ("bilinear_form", lambda x, W, y: x @ y.T, "left W out"),
    "bilinear_form: matching rows only": (
        "bilinear_form",
        lambda x, W, y: ((x @ W) * y).sum(-1),
        "paired x_i with y_i only",
    ),
    "bilinear_form: everything summed": (
        "bilinear_form",
        lambda x, W, y: (x @ W @ y.T).sum(),
        "summed over p and q too",
    ),
    "image_grid: column by column": (
        "image_grid",
        lambda im, r: einops.rearrange(im, "(c r) h w -> (r h) (c w)", r=r),
        "column by column",
    ),
    "image_grid: pixels interleaved": (
        "image_grid",
        lambda im, r: einops.rearrange(im, "(r c) h w -> (h r) (w c)", r=r),
        "interleaved the images' pixels",
    ),
    "image_grid: rows interleaved": (
        "image_grid",
        lambda im, r: einops.rearrange(im, "(r c) h w -> (h r) (c w)", r=r),
        "interleaved the pixel rows",
    ),
    "image_grid: n_rows columns": (
        "image_grid",
        lambda im, r: einops.rearrange(im, "(r c) h w -> (r h) (c w)", c=r),
        "number of grid columns",
    ),
    "image_grid: grid transposed": (
        "image_grid",
        lambda im, r: einops.rearrange(im, "(r c) h w -> (c h) (r w)", r=r),
        "transposed the grid",
    ),
    "image_grid: images transposed": (
        "image_grid",
        lambda im, r: einops.rearrange(im, "(r c) h w -> (r w) (c h)", r=r),
        "transposed each image",
    ),
    "image_grid: one column": (
        "image_grid",
        lambda im, r: einops.rearrange(im, "b h w -> (b h) w"),
        "one column",
    ),
    "max_pool: strided": (
        "max_pool",
        lambda im, k: einops.reduce(im, "b (i h) (j w) -> b h w", "max", i=k, j=k),
        "entries k apart",
    ),
    "max_pool: average pooling": (
        "max_pool",
        lambda im, k: F.avg_pool2d(im[:, None], k)[:, 0],
        "averaged each tile",
    ),
    "max_pool: min": ("max_pool", lambda im, k: -F.max_pool2d(-im[:, None], k)[:, 0], "smallest"),
    "max_pool: rows only": (
        "max_pool",
        lambda im, k: einops.reduce(im, "b (h i) w -> b h w", "max", i=k),
        "pooled along h only",
    ),
    "max_pool: whole image": ("max_pool", lambda im, k: im.amax((1, 2)), "whole image"),
    "max_pool: k tiles per side": (
        "max_pool",
        lambda im, k: einops.reduce(im, "b (h i) (w j) -> b h w", "max", h=k, w=k),
        "number of tiles per side",
    ),
    "kron: factors swapped": ("kron", lambda A, B: torch.kron(B, A), "swapped the factors"),
    "kron: (m n) (p q)": ("kron", kron_grouped("m p n q -> (m n) (p q)"), "as (m n) (p q)"),
    "kron: outer of flattened": (
        "kron",
        lambda A, B: torch.outer(A.flatten(), B.flatten()),
        "as (m n) (p q)",
    ),
    "kron: (q n)": ("kron", kron_grouped("m p n q -> (m p) (q n)"), "columns as (q n)"),
    "kron: (p m)": ("kron", kron_grouped("m p n q -> (p m) (n q)"), "rows as (p m)"),
    "block_matmul: B_st A_rs": (
        "block_matmul",
        lambda A, B: einops.einsum(B, A, "s t a c, r s c d -> r t a d"),
        "do not commute",
    ),
    "block_matmul: matching blocks only": (
        "block_matmul",
        lambda A, B: einops.einsum(A, B, "r t m k, r t k n -> r t m n"),
        "only matching blocks",
    ),
    "block_matmul: blocks entrywise": (
        "block_matmul",
        lambda A, B: einops.einsum(A, B, "r s m n, s t m n -> r t m n"),
        "entry by entry",
    ),
    "block_matmul: grid transposed": (
        "block_matmul",
        lambda A, B: einops.einsum(A, B, "r s m k, s t k n -> t r m n"),
        "grid of blocks",
    ),
    "query_key_dots: key_posn before query_posn": (
        "query_key_dots",
        lambda q, k: torch.einsum("bihd,bjhd->bhji", q, k),
        "swapped query_posn and key_posn",
    ),
    "query_key_dots: summed over heads": (
        "query_key_dots",
        lambda q, k: torch.einsum("bihd,bjhd->bij", q, k),
        "summed over n_heads too",
    ),
    "query_key_dots: same positions only": (
        "query_key_dots",
        lambda q, k: (q * k).sum(-1),
        "own position",
    ),
    "query_key_dots: n_heads last": (
        "query_key_dots",
        lambda q, k: torch.einsum("bihd,bjhd->bijh", q, k),
        "put n_heads last",
    ),
    "split_heads: (d_head n_heads)": ("split_heads", split_grouped, "as (d_head n_heads)"),
    "split_heads: view as d_head n_heads": (
        "split_heads",
        lambda x, h: x.view(*x.shape[:2], -1, h),
        "swapped n_heads and d_head",
    ),
    "merge_heads: (d_head n_heads)": (
        "merge_heads",
        lambda z: z.transpose(-1, -2).flatten(-2),
        "merged the axes as (d_head n_heads)",
    ),
    "merge_heads: summed heads": ("merge_heads", lambda z: z.sum(2), "summed the heads"),
    "merge_heads: averaged heads": (
        "merge_heads",
        lambda z: z.mean(2),
        "summed (or averaged) the heads",
    ),
    "mean_pool: sum": ("mean_pool", lambda x: x.sum(1), "summed over posn"),
    "mean_pool: over d_model": ("mean_pool", lambda x: x.mean(-1), "averaged over d_model"),
    "mean_pool: max": ("mean_pool", lambda x: x.amax(1), "maximum"),
    "mean_pool: over everything": ("mean_pool", lambda x: x.mean(), "averaged over every axis"),
    "repeat_over_batch: batch after posn": (
        "repeat_over_batch",
        lambda W, b: einops.repeat(W, "p d -> p b d", b=b),
        "put the new batch axis after posn",
    ),
    "repeat_over_batch: stacked rows": (
        "repeat_over_batch",
        lambda W, b: W.repeat(b, 1),
        "stacked the copies along one axis",
    ),
    "repeat_over_batch: side by side": (
        "repeat_over_batch",
        lambda W, b: W.repeat(1, b),
        "side by side along d_model",
    ),
}


@pytest.mark.parametrize("name, learner, fragment", MISTAKES.values(), ids=MISTAKES.keys())
def test_check_names_the_mistake(name, learner, fragment):
    assert_rejects(checker(name), learner, fragment)


def test_check_frobenius_inner_reports_trace_of_a_b_failing_on_non_square_shapes():
    # A learner who special-cases square matrices still meets the non-square ones.
    def square_only(A, B):
        return (A * B).sum() if A.shape[0] == A.shape[1] else torch.trace(A @ B)

    message = assert_rejects(checks.check_frobenius_inner, square_only, "raised RuntimeError")
    assert "(4, 2)" in message


def test_check_hadamard_rejects_multiplying_in_place():
    def in_place(A, B):
        A *= B
        return A

    assert_rejects(checks.check_hadamard, in_place, "modified its input (argument 1)")
