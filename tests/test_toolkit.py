"""The chapter 0 checkers accept correct code, however it is written, and name real mistakes."""

import ast
import re

import einops
import pytest
import torch
import torch.nn.functional as F

from checks import toolkit as checks
from course import notebooks
from solutions import toolkit as ref
from tests.support import assert_accepts, assert_rejects

NAMES = [name.removeprefix("check_") for name in checks.__all__]


def checker(name):
    return getattr(checks, f"check_{name}")


def test_every_exercise_has_a_checker_and_a_reference():
    assert NAMES == [
        "matmul", "dot", "diagonal", "trace", "frobenius_inner", "hadamard", "outer",
        "bilinear_form", "query_key_dots", "split_heads", "merge_heads", "image_grid",
        "mean_pool", "max_pool", "repeat_over_batch", "kron", "block_matmul",
    ]  # fmt: skip
    assert all(callable(getattr(ref, name)) for name in NAMES)


# --- What every checker does ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_check_accepts_the_reference(name, capsys):
    assert_accepts(checker(name), getattr(ref, name), capsys)


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_the_stub_as_not_implemented(name):
    def stub(*args):
        raise NotImplementedError()

    stub.__name__ = name
    assert_rejects(checker(name), stub, "not implemented")


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_a_missing_return(name):
    assert_rejects(checker(name), lambda *args: None, "returned None", "forget `return`")


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_code_that_raises_and_shows_the_line(name):
    def broken(*args):
        raise ValueError("oops")

    assert_rejects(checker(name), broken, "raised ValueError: oops", "line")


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_a_wrong_shape(name):
    assert_rejects(
        checker(name), lambda *args: torch.zeros(7, 7, 7, 7, 7), "shape (7, 7, 7, 7, 7), expected"
    )


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_a_wrong_dtype(name):
    assert_rejects(checker(name), lambda *args: getattr(ref, name)(*args).double(), "dtype")


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_nan(name):
    assert_rejects(checker(name), lambda *args: getattr(ref, name)(*args) * torch.nan, "NaN")


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_modifying_the_input_in_place(name):
    def in_place(*args):
        out = getattr(ref, name)(*args).clone()
        args[0].mul_(2)
        return out

    assert_rejects(checker(name), in_place, "modified its input")


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_something_not_callable(name):
    assert_rejects(checker(name), None, "expected something callable")


# --- Correct code, however it is written ------------------------------------------------


def loop_matmul(A, B):
    C = torch.zeros(A.shape[0], B.shape[1])
    for i in range(A.shape[0]):
        for j in range(B.shape[1]):
            for k in range(A.shape[1]):
                C[i, j] += A[i, k] * B[k, j]
    return C


def block_kron(A, B):
    rows = [torch.cat([A[i, j] * B for j in range(A.shape[1])], dim=1) for i in range(A.shape[0])]
    return torch.cat(rows, dim=0)


def loop_block_matmul(A, B):
    def block(r, t):
        return sum(A[r, s] @ B[s, t] for s in range(A.shape[1]))

    return torch.stack(
        [torch.stack([block(r, t) for t in range(B.shape[1])]) for r in range(A.shape[0])]
    )


def full_block_matmul(A, B):
    # Assemble the full matrices, multiply, cut the product back into blocks.
    full_A = einops.rearrange(A, "r s m k -> (r m) (s k)")
    full_B = einops.rearrange(B, "s t k n -> (s k) (t n)")
    return einops.rearrange(full_A @ full_B, "(r m) (t n) -> r t m n", r=A.shape[0], t=B.shape[1])


def loop_diagonal(A):
    return torch.stack([A[..., i, i] for i in range(A.shape[-1])], dim=-1)


def pairs_bilinear(x, W, y):
    # torch's bilinear layer pairs rows: give it every (x_i, y_j) pair, then fold the pairs.
    p, q = x.shape[0], y.shape[0]
    pairs = F.bilinear(x.repeat_interleave(q, 0), y.repeat(p, 1), W[None])
    return pairs.view(p, q)


def loop_image_grid(images, n_rows):
    per_row = images.shape[0] // n_rows
    rows = [torch.cat(list(images[r * per_row : (r + 1) * per_row]), dim=1) for r in range(n_rows)]
    return torch.cat(rows, dim=0)


def reshape_max_pool(images, k):
    b, h, w = images.shape
    return images.reshape(b, h // k, k, w // k, k).amax(dim=(2, 4))


VARIANTS = {
    "matmul: A @ B": ("matmul", lambda A, B: A @ B),
    "matmul: torch.mm": ("matmul", torch.mm),
    "matmul: torch.einsum": ("matmul", lambda A, B: torch.einsum("ik,kj->ij", A, B)),
    "matmul: broadcast and sum": ("matmul", lambda A, B: (A[:, :, None] * B[None]).sum(1)),
    "matmul: explicit loops": ("matmul", loop_matmul),
    "dot: sum over the last axis": ("dot", lambda x, y: (x * y).sum(-1)),
    "dot: torch.linalg.vecdot": ("dot", torch.linalg.vecdot),
    "dot: torch.einsum": ("dot", lambda x, y: torch.einsum("...i,...i->...", x, y)),
    "dot: batched matmul": ("dot", lambda x, y: (x[..., None, :] @ y[..., :, None])[..., 0, 0]),
    "frobenius_inner: trace(A^TB)": ("frobenius_inner", lambda A, B: torch.trace(A.T @ B)),
    "frobenius_inner: trace(AB^T)": ("frobenius_inner", lambda A, B: torch.trace(A @ B.T)),
    "frobenius_inner: sum of A * B": ("frobenius_inner", lambda A, B: (A * B).sum()),
    "frobenius_inner: tensordot": ("frobenius_inner", lambda A, B: torch.tensordot(A, B, dims=2)),
    "frobenius_inner: flattened dot": ("frobenius_inner", lambda A, B: A.flatten() @ B.flatten()),
    "hadamard: A * B": ("hadamard", lambda A, B: A * B),
    "hadamard: torch.mul": ("hadamard", torch.mul),
    "hadamard: torch.einsum": ("hadamard", lambda A, B: torch.einsum("ij,ij->ij", A, B)),
    "outer: torch.outer": ("outer", torch.outer),
    "outer: broadcasting": ("outer", lambda u, v: u[:, None] * v[None, :]),
    "outer: column times row": ("outer", lambda u, v: u.unsqueeze(1) @ v.unsqueeze(0)),
    "outer: stacked rows": ("outer", lambda u, v: torch.stack([ui * v for ui in u])),
    "diagonal: torch.diagonal": ("diagonal", lambda A: torch.diagonal(A, dim1=-2, dim2=-1)),
    "diagonal: Tensor.diagonal": ("diagonal", lambda A: A.diagonal(dim1=-2, dim2=-1)),
    "diagonal: mask with the identity": (
        "diagonal",
        lambda A: (A * torch.eye(A.shape[-1])).sum(-1),
    ),
    "diagonal: loop": ("diagonal", loop_diagonal),
    "diagonal: torch.einsum": ("diagonal", lambda A: torch.einsum("...ii->...i", A)),
    "trace: sum of the diagonal": ("trace", lambda A: A.diagonal(dim1=-2, dim2=-1).sum(-1)),
    "trace: torch.einsum": ("trace", lambda A: torch.einsum("...ii->...", A)),
    "trace: mask with the identity": (
        "trace",
        lambda A: (A * torch.eye(A.shape[-1])).sum((-2, -1)),
    ),
    "trace: torch.vmap(torch.trace)": (
        "trace",
        lambda A: torch.vmap(torch.trace)(A.reshape(-1, *A.shape[-2:])).reshape(A.shape[:-2]),
    ),
    "bilinear_form: x @ W @ y.T": ("bilinear_form", lambda x, W, y: x @ W @ y.T),
    "bilinear_form: x @ (W @ y.T)": ("bilinear_form", lambda x, W, y: x @ (W @ y.T)),
    "bilinear_form: multi_dot": (
        "bilinear_form",
        lambda x, W, y: torch.linalg.multi_dot([x, W, y.T]),
    ),
    "bilinear_form: torch.einsum": (
        "bilinear_form",
        lambda x, W, y: torch.einsum("im,mn,jn->ij", x, W, y),
    ),
    "bilinear_form: F.bilinear on every pair": ("bilinear_form", pairs_bilinear),
    "image_grid: loops and torch.cat": ("image_grid", loop_image_grid),
    "image_grid: reshape and permute": (
        "image_grid",
        lambda im, r: (
            im.reshape(r, -1, *im.shape[1:]).permute(0, 2, 1, 3).reshape(r * im.shape[1], -1)
        ),
    ),
    "image_grid: rearrange with c given": (
        "image_grid",
        lambda im, r: einops.rearrange(im, "(r c) h w -> (r h) (c w)", c=im.shape[0] // r),
    ),
    "max_pool: F.max_pool2d": ("max_pool", lambda im, k: F.max_pool2d(im[:, None], k)[:, 0]),
    "max_pool: reshape and amax": ("max_pool", reshape_max_pool),
    "max_pool: unfold": (
        "max_pool",
        lambda im, k: im.unfold(1, k, k).unfold(2, k, k).amax(dim=(-2, -1)),
    ),
    "kron: torch.kron": ("kron", torch.kron),
    "kron: blocks glued with torch.cat": ("kron", block_kron),
    "kron: broadcast and reshape": (
        "kron",
        lambda A, B: (A[:, None, :, None] * B[None, :, None, :]).flatten(2).flatten(0, 1),
    ),
    "block_matmul: loops over blocks": ("block_matmul", loop_block_matmul),
    "block_matmul: via the full matrices": ("block_matmul", full_block_matmul),
    "query_key_dots: torch.einsum": (
        "query_key_dots",
        lambda q, k: torch.einsum("bihd,bjhd->bhij", q, k),
    ),
    "query_key_dots: permute and matmul": (
        "query_key_dots",
        lambda q, k: q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1),
    ),
    "split_heads: view": ("split_heads", lambda x, h: x.view(*x.shape[:2], h, -1)),
    "split_heads: unflatten": ("split_heads", lambda x, h: x.unflatten(-1, (h, -1))),
    "split_heads: chunk and stack": (
        "split_heads",
        lambda x, h: torch.stack(x.chunk(h, dim=-1), dim=2),
    ),
    "merge_heads: flatten": ("merge_heads", lambda z: z.flatten(-2)),
    "merge_heads: reshape": ("merge_heads", lambda z: z.reshape(*z.shape[:2], -1)),
    "merge_heads: torch.cat": (
        "merge_heads",
        lambda z: torch.cat([z[:, :, h] for h in range(z.shape[2])], dim=-1),
    ),
    "mean_pool: mean": ("mean_pool", lambda x: x.mean(1)),
    "mean_pool: sum over length": ("mean_pool", lambda x: x.sum(1) / x.shape[1]),
    "mean_pool: einops.reduce": ("mean_pool", lambda x: einops.reduce(x, "b p d -> b d", "mean")),
    "repeat_over_batch: expand": ("repeat_over_batch", lambda W, b: W.expand(b, -1, -1)),
    "repeat_over_batch: Tensor.repeat": ("repeat_over_batch", lambda W, b: W.repeat(b, 1, 1)),
    "repeat_over_batch: stack": ("repeat_over_batch", lambda W, b: torch.stack([W] * b)),
}


@pytest.mark.parametrize("name, learner", VARIANTS.values(), ids=VARIANTS.keys())
def test_check_accepts_a_correct_variant(name, learner, capsys):
    assert_accepts(checker(name), learner, capsys)


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


# --- The hints and the prose teach the idea; only the second hint gives the pattern ---------


def solution_patterns(name):
    """The einops patterns in the reference solution of an exercise."""
    source = notebooks.solution_source("toolkit", name)
    return [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "->" in node.value
    ]


def exercise_blocks():
    _, blocks = notebooks.parse((notebooks.SOURCES / "00_toolkit.md").read_text())
    return [block for block in blocks if block.kind == "exercise"]


def test_every_exercise_of_the_notebook_is_checked_here():
    assert [block.name for block in exercise_blocks()] == NAMES


@pytest.mark.parametrize("block", exercise_blocks(), ids=lambda block: block.name)
def test_first_hint_gives_the_idea_and_the_second_the_pattern(block):
    idea, answer = re.split(rf"^{notebooks.ANSWER}\s*$", block.text, flags=re.M)
    for pattern in solution_patterns(block.name):
        assert pattern not in idea, f"the first hint of {block.name} gives {pattern!r}"
        assert pattern in answer, f"the second hint of {block.name} lacks {pattern!r}"


def test_prose_page_gives_no_exercise_pattern():
    prose = (notebooks.ROOT / "book" / "00_toolkit.md").read_text()
    for name in NAMES:
        for pattern in solution_patterns(name):
            assert pattern not in prose, f"book/00_toolkit.md gives {name}'s {pattern!r}"
