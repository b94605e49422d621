"""The chapter 2 checkers accept attention however it is written, and name each usual mistake."""

import math

import pytest
import torch
import torch.nn.functional as F

from checks import attention as checks
from checks._attention_diagnosis import counted_flops
from checks._configs import NARROW_HEADS
from solutions import attention as ref
from solutions.attention import Attention
from support import assert_accepts, assert_rejects


def learner_attention(
    *,
    scale="d_head",
    mask="causal",
    fill=float("-inf"),
    softmax_dim=-1,
    mask_after=False,
    mean_heads=False,
    b_O_per_head=False,
    drop=(),
    only_forward=False,
):
    """An Attention written the way a learner might: matmuls with broadcasting, one mistake
    switched on. `only_forward` keeps the reference attn_scores and pattern."""

    def bias(self, name):
        p = getattr(self, name)
        return torch.zeros_like(p) if name in drop else p

    def scores(self, x):
        q = x[:, None] @ self.W_Q + bias(self, "b_Q")[:, None]
        k = x[:, None] @ self.W_K + bias(self, "b_K")[:, None]
        d = {"d_head": self.cfg.d_head, "d_model": self.cfg.d_model, "none": 1}[scale]
        return q @ k.transpose(-1, -2) / math.sqrt(d)

    def future(n):
        key, query = torch.arange(n)[None, :], torch.arange(n)[:, None]
        return {
            "causal": key > query,
            "diagonal": key >= query,
            "past": key < query,
            "none": torch.zeros(n, n, dtype=torch.bool),
        }[mask]

    def attn_scores(self, x):
        s = scores(self, x)
        return s if mask_after else s.masked_fill(future(x.shape[1]), fill)

    def pattern(self, x):
        p = attn_scores(self, x).softmax(dim=softmax_dim)
        return p.masked_fill(future(x.shape[1]), 0) if mask_after else p

    def forward(self, x):
        v = x[:, None] @ self.W_V + bias(self, "b_V")[:, None]
        out = pattern(self, x) @ v @ self.W_O
        if b_O_per_head:
            out = out + bias(self, "b_O")
        out = out.mean(1) if mean_heads else out.sum(1)
        return out if b_O_per_head else out + bias(self, "b_O")

    methods = {"forward": forward}
    if not only_forward:
        methods |= {"attn_scores": attn_scores, "pattern": pattern}
    return type("Attention", (Attention,), methods)


def variant(**methods):
    return type("Attention", (Attention,), methods)


# --- Attention -------------------------------------------------------------------------


def test_check_attention_accepts_the_reference(capsys):
    assert_accepts(checks.check_attention, Attention, capsys)


def test_check_attention_accepts_matmul_with_broadcasting(capsys):
    assert_accepts(checks.check_attention, learner_attention(), capsys)


def test_check_attention_accepts_a_mask_of_minus_1e5_as_transformer_lens_writes(capsys):
    assert_accepts(checks.check_attention, learner_attention(fill=-1e5), capsys)


def test_check_attention_accepts_sdpa(capsys):
    def forward(self, x):
        q, k, v = (
            x[:, None] @ W + b[:, None]
            for W, b in [(self.W_Q, self.b_Q), (self.W_K, self.b_K), (self.W_V, self.b_V)]
        )
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return (z @ self.W_O).sum(1) + self.b_O

    assert_accepts(checks.check_attention, variant(forward=forward), capsys)


def test_check_attention_rejects_the_stub():
    def stub(self, x):
        raise NotImplementedError()

    assert_rejects(
        checks.check_attention,
        variant(attn_scores=stub, pattern=stub, forward=stub),
        "not implemented yet",
    )


MISTAKES = {
    "scaling by sqrt(d_model)": (dict(scale="d_model"), "sqrt(d_model/d_head) = 2"),
    "no scaling": (dict(scale="none"), "sqrt(d_head)"),
    "masking the diagonal": (dict(mask="diagonal"), "diagonal"),
    "masking the diagonal with -1e5": (dict(mask="diagonal", fill=-1e5), "diagonal"),
    "no mask": (dict(mask="none"), "nothing is masked"),
    "a mask that keeps the future": (dict(mask="past"), "past"),
    "softmax over queries": (dict(softmax_dim=-2), "softmax"),
    "masking after the softmax": (dict(mask_after=True), "before the softmax"),
    "averaging the heads": (dict(mean_heads=True), "averaged the heads"),
    "b_O in every head": (dict(b_O_per_head=True), "b_O to every head's output"),
    **{
        f"forgetting {b}": (dict(drop=(b,)), f"forgot the bias {b}")
        for b in ["b_Q", "b_K", "b_V", "b_O"]
    },
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_check_attention_rejects_and_names(mistake):
    switches, diagnosis = MISTAKES[mistake]
    assert_rejects(checks.check_attention, learner_attention(**switches), diagnosis)


FORWARD_DIAGNOSES = {
    "scaling by sqrt(d_model)": "sqrt(d_model/d_head) = 2",
    "no scaling": "sqrt(d_head)",
    "masking the diagonal": "Did you mask the diagonal too?",
    "masking the diagonal with -1e5": "masked the diagonal too",
    "no mask": "applied no causal mask",
    "a mask that keeps the future": "masked the past and kept the future",
    "softmax over queries": "softmax over queries",
    "masking after the softmax": "masked after the softmax",
    "averaging the heads": "averaged the heads",
    "forgetting b_Q": "forgot the bias b_Q",
    "forgetting b_V": "forgot the bias b_V",
    "forgetting b_O": "forgot the bias b_O",
}


@pytest.mark.parametrize("mistake", FORWARD_DIAGNOSES)
def test_check_attention_names_mistakes_made_in_forward_alone(mistake):
    switches, _ = MISTAKES[mistake]
    learner = learner_attention(**switches, only_forward=True)
    assert_rejects(checks.check_attention, learner, "output", FORWARD_DIAGNOSES[mistake])


def test_forgetting_b_K_leaves_the_pattern_unchanged_so_only_attn_scores_reveal_it(capsys):
    assert_accepts(
        checks.check_attention, learner_attention(drop=("b_K",), only_forward=True), capsys
    )


def test_check_attention_diagnoses_a_pattern_normalised_over_queries():
    def pattern(self, x):
        return self.attn_scores(x).softmax(dim=-2)

    assert_rejects(checks.check_attention, variant(pattern=pattern), "each column", "over the keys")


def test_check_attention_diagnoses_rows_that_do_not_sum_to_one():
    def pattern(self, x):
        return self.attn_scores(x).softmax(dim=-1) * 0.9

    assert_rejects(checks.check_attention, variant(pattern=pattern), "each row", "sum to between")


@pytest.mark.parametrize(
    "forward, message",
    [
        (lambda self, x: None, "did you forget `return`"),
        (lambda self, x: Attention.forward(self, x).double(), "dtype torch.float64"),
        (lambda self, x: Attention.forward(self, x)[:, :, :-1], "has shape"),
        (lambda self, x: Attention.forward(self, x) * float("nan"), "NaN"),
        (lambda self, x: x @ torch.ones(3, 3), "raised RuntimeError"),
        (lambda self, x: Attention.forward(self, x.mul_(2)), "modified its input"),
    ],
    ids=["none", "dtype", "shape", "nan", "raises", "in-place"],
)
def test_check_attention_turns_broken_code_into_a_verdict(forward, message):
    assert_rejects(checks.check_attention, variant(forward=forward), message)


def test_check_attention_names_a_misnamed_parameter():
    class Renamed(Attention):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.W_q = self.W_Q
            del self.W_Q

    assert_rejects(checks.check_attention, Renamed, "Missing: ['W_Q']", "unexpected: ['W_q']")


# --- Scores and mask -------------------------------------------------------------------


def test_check_single_head_scores_accepts_reference_and_einsum(capsys):
    assert_accepts(checks.check_single_head_scores, ref.single_head_scores, capsys)

    def by_einsum(q, k):
        return torch.einsum("qd,kd->qk", q, k) / q.shape[-1] ** 0.5

    assert_accepts(checks.check_single_head_scores, by_einsum, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda q, k: q @ k.T, "forgot to divide the scores by sqrt(d_head)"),
        (lambda q, k: q @ k.T / q.shape[-1], "divided by d_head instead of sqrt(d_head)"),
        (lambda q, k: k @ q.T / q.shape[-1] ** 0.5, "swapped queries and keys"),
        (lambda q, k: q @ k.T / 3, "times"),
    ],
    ids=["unscaled", "by-d_head", "swapped", "other-factor"],
)
def test_check_single_head_scores_rejects(fn, message):
    assert_rejects(checks.check_single_head_scores, fn, message)


def test_check_attention_scores_accepts_matmul(capsys):
    def by_matmul(q, k):
        return q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / math.sqrt(q.shape[-1])

    assert_accepts(checks.check_attention_scores, by_matmul, capsys)


def test_check_attention_scores_rejects_missing_scale_and_wrong_axis_order():
    assert_rejects(
        checks.check_attention_scores,
        lambda q, k: torch.einsum("bqhd,bkhd->bhqk", q, k),
        "sqrt(d_head)",
    )
    assert_rejects(
        checks.check_attention_scores,
        lambda q, k: torch.einsum("bqhd,bkhd->bqkh", q, k) / q.shape[-1] ** 0.5,
        "have shape",
    )


def test_check_attention_scores_rejects_the_stub():
    def stub(q, k):
        raise NotImplementedError()

    assert_rejects(checks.check_attention_scores, stub, "not implemented yet")


def _triu_mask(scores, diagonal, value):
    n = scores.shape[-1]
    return scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(diagonal), value)


@pytest.mark.parametrize(
    "fn",
    [
        ref.apply_causal_mask,
        lambda s: _triu_mask(s, 1, -1e5),
        lambda s: _triu_mask(s, 1, torch.finfo(s.dtype).min),
        lambda s: torch.where(torch.ones_like(s).tril().bool(), s, torch.tensor(-1e5)),
        lambda s: s + torch.full_like(s, float("-inf")).triu(1),
    ],
    ids=["reference", "minus-1e5", "finfo-min", "where-tril", "add-triu"],
)
def test_check_apply_causal_mask_accepts(fn, capsys):
    assert_accepts(checks.check_apply_causal_mask, fn, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda s: _triu_mask(s, 0, float("-inf")), "mask the diagonal too"),
        (lambda s: s.clone(), "match except above the diagonal, where nothing is masked"),
        (lambda s: _triu_mask(s.mT, 1, float("-inf")).mT, "mask the past and keep the future"),
        (lambda s: _triu_mask(s, 1, 0.0), "check your mask"),
        (lambda s: _triu_mask(s, 1, -1.0), "check your mask"),
        (lambda s: _triu_mask(s, 1, float("nan")), "NaN"),
        (lambda s: s.masked_fill_(torch.ones_like(s).triu(1).bool(), -1e5), "modified its input"),
        (lambda s: None, "did you forget `return`"),
    ],
    ids=["diagonal", "no-mask", "keeps-future", "zero", "minus-one", "nan", "in-place", "none"],
)
def test_check_apply_causal_mask_rejects(fn, message):
    assert_rejects(checks.check_apply_causal_mask, fn, message)


# --- Heads add up; merged matrices; frozen patterns --------------------------------------


def test_check_concat_heads_then_project_accepts_flatten(capsys):
    assert_accepts(
        checks.check_concat_heads_then_project,
        lambda z, W_O: z.flatten(-2) @ W_O.flatten(0, 1),
        capsys,
    )


def test_check_concat_heads_then_project_rejects_mismatched_head_order():
    def mixed(z, W_O):
        return z.transpose(-1, -2).flatten(-2) @ W_O.flatten(0, 1)

    assert_rejects(checks.check_concat_heads_then_project, mixed, "same order")


def test_check_concat_heads_then_project_names_W_O_flattened_in_the_other_order():
    def mixed(z, W_O):
        return z.flatten(-2) @ W_O.transpose(0, 1).flatten(0, 1)

    assert_rejects(
        checks.check_concat_heads_then_project, mixed, "W_O as (d_head n_heads)", "same order"
    )


def test_check_per_head_outputs_accepts_broadcast_matmul(capsys):
    def by_matmul(z, W_O):
        return (z.unsqueeze(-2) @ W_O).squeeze(-2)

    assert_accepts(checks.check_per_head_outputs, by_matmul, capsys)


def test_check_per_head_outputs_rejects_summed_heads():
    assert_rejects(
        checks.check_per_head_outputs, ref.concat_heads_then_project, "per-head outputs have shape"
    )


def test_check_w_qk_and_w_ov_accept_einsum(capsys):
    assert_accepts(checks.check_w_qk, lambda a: torch.einsum("hmd,hnd->hmn", a.W_Q, a.W_K), capsys)
    assert_accepts(checks.check_w_ov, lambda a: torch.einsum("hmd,hdn->hmn", a.W_V, a.W_O), capsys)


def test_check_w_qk_rejects_keys_before_queries():
    assert_rejects(checks.check_w_qk, lambda a: a.W_K @ a.W_Q.mT, "transposed")


def test_check_w_ov_rejects_the_transposed_product():
    assert_rejects(checks.check_w_ov, lambda a: a.W_O.mT @ a.W_V.mT, "transposed")


def test_check_w_qk_rejects_the_stub():
    def stub(attn):
        raise NotImplementedError()

    assert_rejects(checks.check_w_qk, stub, "not implemented yet")


def test_check_frozen_pattern_accepts_reference_and_einsum(capsys):
    f = checks.check_head_output_with_frozen_pattern
    assert_accepts(f, ref.head_output_with_frozen_pattern, capsys)

    def by_einsum(attn, head, x, pattern):
        v = torch.einsum("bpm,md->bpd", x, attn.W_V[head]) + attn.b_V[head]
        return torch.einsum("bqk,bkd,dm->bqm", pattern, v, attn.W_O[head])

    assert_accepts(f, by_einsum, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (
            lambda a, h, x, p: a.pattern(x)[:, h] @ (x @ a.W_V[h] + a.b_V[h]) @ a.W_O[h],
            "recomputed the pattern from x",
        ),
        (lambda a, h, x, p: p @ (x @ a.W_V[h] + a.b_V[h]) @ a.W_O[h] + a.b_O, "added b_O"),
        (lambda a, h, x, p: p @ x @ a.W_V[h] @ a.W_O[h], "forgot b_V"),
        (lambda a, h, x, p: p.mT @ (x @ a.W_V[h] + a.b_V[h]) @ a.W_O[h], "transposed"),
    ],
    ids=["recomputes-pattern", "adds-b_O", "no-b_V", "transposed"],
)
def test_check_frozen_pattern_rejects(fn, message):
    assert_rejects(checks.check_head_output_with_frozen_pattern, fn, message)


# --- Costs -----------------------------------------------------------------------------


def test_check_kv_cache_bytes_accepts_the_reference(capsys):
    assert_accepts(checks.check_kv_cache_bytes, ref.kv_cache_bytes, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda c, n, b=4: c.n_layers * c.n_heads * c.d_head * n * b, "both keys and values"),
        (lambda c, n, b=4: 2 * c.n_heads * c.d_head * n * b, "n_layers"),
        (lambda c, n, b=4: 2 * c.n_layers * c.d_model * n * b, "not d_model"),
        (lambda c, n, b=2: 2 * c.n_layers * c.n_heads * c.d_head * n * b, "number of bytes"),
        (lambda c, n, b=4: 2 * c.n_layers * c.d_model / c.n_heads * c.d_head * n * b, "use //"),
        (
            lambda c, n, b=4: torch.tensor(2.0 * c.n_layers * c.n_heads * c.d_head * n * b),
            "use //",
        ),
    ],
    ids=["keys-only", "one-layer", "d_model", "default-2-bytes", "float", "float-tensor"],
)
def test_check_kv_cache_bytes_rejects(fn, message):
    assert_rejects(checks.check_kv_cache_bytes, fn, message)


def test_check_kv_cache_bytes_accepts_a_count_held_in_an_integer_tensor(capsys):
    assert_accepts(
        checks.check_kv_cache_bytes,
        lambda c, n, b=4: torch.tensor(2 * c.n_layers * c.n_heads * c.d_head * n * b),
        capsys,
    )


def test_check_attention_flops_accepts_the_reference(capsys):
    assert_accepts(checks.check_attention_flops, ref.attention_flops, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda c, n: c.n_layers * c.n_heads * 2 * n * n * c.d_head, "That is half"),
        (lambda c, n: c.n_layers * c.n_heads * 4 * n * c.d_head, "quadratic"),
        (lambda c, n: c.n_heads * 4 * n * n * c.d_head, "n_layers"),
        (lambda c, n: c.n_layers * 4 * n * n * c.d_model, "not d_model"),
        (lambda c, n: c.n_layers * c.n_heads * 2 * n * (n + 1) * c.d_head, "the causal half"),
        (lambda c, n: c.n_layers * c.n_heads * 4.0 * n * n * c.d_head, "should be an int"),
    ],
    ids=["half", "linear", "one-layer", "d_model", "causal-half", "float"],
)
def test_check_attention_flops_rejects(fn, message):
    assert_rejects(checks.check_attention_flops, fn, message)


def test_attention_flops_matches_what_torch_counts():
    assert ref.attention_flops(NARROW_HEADS, 12) == counted_flops(NARROW_HEADS, 12)
