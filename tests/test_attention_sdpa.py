"""`scaled_dot_product_attention`: the reference agrees with PyTorch's, `Attention` is built on
it without a change in its numbers, and the checker accepts it written any correct way and
names each usual mistake."""

import math

import einops
import pytest
import torch
import torch.nn.functional as F

from checks import attention as checks
from checks._core import randomize
from solutions import attention as ref
from solutions.config import TINY
from support import assert_accepts, assert_rejects

check = checks.check_scaled_dot_product_attention


def learner_sdpa(
    *,
    scale="sqrt",
    softmax_dim=-1,
    invert=False,
    fill=float("-inf"),
    after=False,
    ignore=False,
    empty="zeros",
):
    """scaled_dot_product_attention as a learner might write it, with `@` and one mistake
    switched on. `empty` is what a query with every key masked gets: "zeros" or "nan"."""

    def sdpa(Q, K, V, mask=None):
        d_k = Q.shape[-1]
        scores = Q @ K.transpose(-1, -2) / {"sqrt": math.sqrt(d_k), "none": 1, "d_k": d_k}[scale]
        if mask is not None and not ignore:
            mask = ~mask if invert else mask
            if not after:
                scores = torch.where(mask, scores, torch.tensor(fill))
        pattern = scores.softmax(dim=softmax_dim)
        if mask is not None and not ignore:
            if after:
                pattern = pattern * mask
            if empty == "zeros":
                pattern = torch.where(mask.any(-1, keepdim=True), pattern, 0.0)
        return pattern @ V

    return sdpa


def test_the_reference_agrees_with_pytorch_fully_masked_rows_included():
    gen = torch.Generator().manual_seed(0)
    Q, K = torch.randn(3, 2, 5, 8, generator=gen), torch.randn(3, 2, 7, 8, generator=gen)
    V = torch.randn(3, 2, 7, 4, generator=gen)
    mask = torch.rand(3, 2, 5, 7, generator=gen) < 0.5
    mask[0, 1, 2] = False  # one query with no key at all
    ours = ref.scaled_dot_product_attention(Q, K, V, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(Q, K, V, attn_mask=mask))
    assert torch.equal(ours[0, 1, 2], torch.zeros(4))
    no_mask = ref.scaled_dot_product_attention(Q, K, V)
    torch.testing.assert_close(no_mask, F.scaled_dot_product_attention(Q, K, V))


def test_attention_forward_calls_scaled_dot_product_attention(monkeypatch):
    calls = []

    def spy(Q, K, V, mask=None):
        calls.append((Q.shape, mask.shape))
        return original(Q, K, V, mask)

    original = ref.scaled_dot_product_attention
    monkeypatch.setattr(ref, "scaled_dot_product_attention", spy)
    ref.Attention(TINY)(torch.randn(2, 5, TINY.d_model))
    assert calls == [(torch.Size([2, TINY.n_heads, 5, TINY.d_head]), torch.Size([5, 5]))]


def test_attention_output_is_bitwise_what_the_explicit_pattern_gives():
    """Built on scaled_dot_product_attention, Attention gives the very numbers it gave when
    forward contracted `pattern` with the values itself: no stored output moves."""
    for seed, posn in [(0, 1), (1, 7), (2, TINY.n_ctx)]:
        attn = randomize(ref.Attention(TINY), seed=seed, scale=0.2)
        x = torch.randn(3, posn, TINY.d_model, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            v = ref.to_heads(x, attn.W_V, attn.b_V)
            z = einops.einsum(attn.pattern(x), v, "b h q k, b k h d -> b q h d")
            explicit = einops.einsum(z, attn.W_O, "b p h d, h d m -> b p m") + attn.b_O
            assert torch.equal(attn(x), explicit)


@pytest.mark.parametrize(
    "fn",
    [
        ref.scaled_dot_product_attention,
        lambda Q, K, V, mask=None: F.scaled_dot_product_attention(Q, K, V, attn_mask=mask),
        learner_sdpa(),
    ],
    ids=["reference", "torch-F-sdpa", "matmul-where"],
)
def test_check_accepts(fn, capsys):
    assert_accepts(check, fn, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (learner_sdpa(scale="none"), "forgot to divide the scores by sqrt(d_k)"),
        (learner_sdpa(scale="d_k"), "divided the scores by d_k instead of sqrt(d_k)"),
        (learner_sdpa(softmax_dim=-2), "softmax over the queries instead of the keys"),
        (learner_sdpa(invert=True), "inverted the mask: True means the query MAY attend"),
        (learner_sdpa(ignore=True), "ignored the mask"),
        (learner_sdpa(after=True), "masked after the softmax"),
        (learner_sdpa(fill=-1e4), "masked with -1e4"),
        (learner_sdpa(empty="nan"), "keys are all masked gives NaN"),
        (learner_sdpa(fill=-1e9, empty="none"), "averages every value"),
        (lambda Q, K, V, mask=None: (Q @ K.mT).softmax(-1) @ V * 0, "wrong values"),
        (lambda Q, K, V, mask=None: None, "did you forget `return`"),
        (lambda Q, K, V, mask=None: Q.mul_(2) @ K.mT @ V, "modified its input"),
    ],
    ids=[
        "no-scale",
        "d_k",
        "softmax-queries",
        "inverted",
        "ignored",
        "after",
        "minus-1e4",
        "nan-rows",
        "finite-fill",
        "zeros",
        "none",
        "in-place",
    ],
)
def test_check_rejects_and_names(fn, message):
    assert_rejects(check, fn, message)


def test_check_rejects_the_stub():
    def stub(Q, K, V, mask=None):
        raise NotImplementedError

    assert_rejects(check, stub, "not implemented yet")
