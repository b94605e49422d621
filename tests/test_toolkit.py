"""The chapter 0 checkers accept correct code, however it is written, and reject what no
solution does (a stub, a crash, a wrong shape); the mistakes they name are in
test_toolkit_mistakes.py."""

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
