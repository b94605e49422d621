"""Checkers for chapter 2 (solutions/attention.py).

Every check uses random weights, biases included, on TINY (d_model = n_heads·d_head, as
in GPT-2) and on ODD (where they differ, so that mixing them up shows). Masked scores may
hold -inf or any large negative number (TransformerLens writes -1e5): both give the same
pattern, so both pass.
"""

import math

import einops
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from checks._core import exercise, randomize, seeded
from course.config import GPT2_SMALL, TINY
from solutions import attention as ref

__all__ = [
    "check_single_head_scores",
    "check_attention_scores",
    "check_apply_causal_mask",
    "check_attention",
    "check_concat_heads_then_project",
    "check_per_head_outputs",
    "check_w_qk",
    "check_w_ov",
    "check_head_output_with_frozen_pattern",
    "check_kv_cache_bytes",
    "check_attention_flops",
]

ODD = TINY.but(n_heads=3, d_head=8, n_ctx=16)
# (config, batch, positions, input scale): one position, a full context, tiny and large inputs.
CASES = [
    (TINY, 1, 1, 1.0),
    (TINY, 2, 5, 1.0),
    (ODD, 3, 7, 1.0),
    (TINY, 2, TINY.n_ctx, 1.0),
    (ODD, 2, 6, 0.01),
    (TINY, 2, 9, 10.0),
]
# Softmax turns an error e in a score into a relative error e in the pattern; scores of
# inputs ×10 are ~100, so float32 rounding alone reaches ~1e-4: allow 1e-3 there.
RTOL = {0.01: 1e-4, 1.0: 1e-4, 10.0: 1e-3}


def _describe(cfg, batch, posn, scale) -> str:
    name = "TINY" if cfg == TINY else "ODD"
    return f"{name}, batch {batch}, {posn} positions, inputs ×{scale:g}"


def _scale_mistakes(scores: Tensor, d_head: int, d_model: int | None = None) -> dict:
    mistakes = {
        "forgot to divide the scores by sqrt(d_head)": scores * math.sqrt(d_head),
        "divided by d_head instead of sqrt(d_head)": scores / math.sqrt(d_head),
        "multiplied by sqrt(d_head) instead of dividing": scores * d_head,
    }
    if d_model is not None and d_model != d_head:
        factor = math.sqrt(d_model / d_head)
        key = (
            f"divided by sqrt(d_model) instead of sqrt(d_head): off by a factor "
            f"sqrt(d_model/d_head) = {factor:.3g}"
        )
        mistakes[key] = scores / factor
    return mistakes


def _first_checks(check, got, expected: Tensor, what: str) -> Tensor:
    """None, type, shape and dtype, reported the standard way; NaN reported here."""
    if not isinstance(got, Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
        check.tensor(got, expected, what=what)
    got = got.detach()
    if torch.isnan(got).any():
        rows = torch.isnan(got).any(-1).nonzero()[:, -1].unique().tolist()
        hint = ""
        if rows == [0]:
            hint = (
                " Only the first position is NaN: its single key was masked, so the softmax "
                "saw nothing but -inf. Did you mask the diagonal too?"
            )
        check.fail(f"the {what} holds NaN values (at query positions {rows[:6]}).{hint}")
    return got


def _compare_masked(check, got, raw: Tensor, *, what: str, mistakes=None, rtol=1e-4) -> None:
    """`got` must equal `raw` at and below the diagonal and be masked above it: -inf, or so
    far below the row's best visible score that the softmax gives it no weight."""
    expected = ref.apply_causal_mask(raw)
    got = _first_checks(check, got, expected, what)
    n = raw.shape[-1]
    above = torch.ones(n, n, dtype=torch.bool).triu(1)
    diag, below = torch.eye(n, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool).tril(-1)
    atol = 1e-5 * max(1.0, raw.abs().max().item())
    blocked = got < expected.max(dim=-1, keepdim=True).values - 80  # e^-80 ≈ 2e-35

    def close(region):
        return torch.allclose(got[..., region], raw[..., region], rtol=rtol, atol=atol)

    if close(below) and close(diag):
        if blocked[..., above].all():
            return
        if close(above):
            check.fail(
                f"the {what} match except above the diagonal, where nothing is masked. "
                "Set every future key (key_posn > query_posn) to -inf before the softmax."
            )
        value = got[..., above][~blocked[..., above]][0].item()
        check.fail(
            f"the {what} match except above the diagonal: check your mask. A future key "
            f"holds {value:.4g}, which the softmax would still weigh. Use -inf (or a "
            "large negative number such as -1e5)."
        )
    if close(below) and blocked[..., diag].all():
        check.fail(
            f"the {what} mask the diagonal too: a query may attend to its own position. "
            "Mask only key_posn > query_posn (torch.triu(..., diagonal=1))."
        )
    if n > 1 and blocked[..., below].all() and not blocked[..., above].all():
        check.fail(
            f"the {what} mask the past and keep the future: mask above the diagonal "
            "(key_posn > query_posn), not below it."
        )
    zero_future = lambda t: t.masked_fill(above, 0)  # noqa: E731
    check.tensor(
        zero_future(got),
        zero_future(expected),
        what=f"kept part of the {what} (at and below the diagonal)",
        mistakes={k: zero_future(v) for k, v in (mistakes or {}).items()},
        rtol=rtol,
    )
    check.fail(f"the {what} are not masked above the diagonal: check your mask.")


def _compare_pattern(check, got, expected: Tensor, *, what: str, mistakes: dict, rtol) -> None:
    got = _first_checks(check, got, expected, what)
    rows = got.sum(-1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        if torch.allclose(got.sum(-2), torch.ones_like(rows), atol=1e-4):
            check.fail(
                f"each column of the {what} sums to 1, not each row: the softmax ran over "
                "queries. Take it over the keys (the last axis)."
            )
        check.fail(
            f"each row of the {what} should sum to 1 (a distribution over keys); yours "
            f"sum to between {rows.min().item():.4g} and {rows.max().item():.4g}. Take "
            "the softmax over the keys (the last axis), after masking, not before."
        )
    n = got.shape[-1]
    if (got[..., torch.ones(n, n, dtype=torch.bool).triu(1)] > 1e-6).any():
        check.fail(f"the {what} gives weight to future keys (above the diagonal): check your mask.")
    check.tensor(got, expected, what=what, mistakes=mistakes, rtol=rtol)


def _forward(
    attn,
    x,
    *,
    scale=None,
    mask="causal",
    fill=float("-inf"),
    softmax_dim=-1,
    mask_after=False,
    mean_heads=False,
    drop=(),
):
    """The reference forward pass with one mistake switched on: (attn_out, pattern, scores)."""
    b = {n: (torch.zeros_like(p) if n in drop else p) for n, p in attn.named_parameters()}
    to_heads = "batch posn d_model, n_heads d_model d_head -> batch posn n_heads d_head"
    q, k, v = (einops.einsum(x, b[f"W_{c}"], to_heads) + b[f"b_{c}"] for c in "QKV")
    scale = scale or math.sqrt(attn.cfg.d_head)
    scores = (
        einops.einsum(q, k, "batch q n_heads d, batch k n_heads d -> batch n_heads q k") / scale
    )
    ones = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool)
    future = {
        "causal": ones.triu(1),
        "diagonal too": ones.triu(0),
        "past": ones.tril(-1),
        "none": ~ones,
    }[mask]
    if not mask_after:
        scores = scores.masked_fill(future, fill)
    pattern = scores.softmax(softmax_dim)
    if mask_after:
        pattern = pattern.masked_fill(future, 0)
    z = einops.einsum(
        pattern, v, "batch n_heads q k, batch k n_heads d_head -> batch q n_heads d_head"
    )
    per_head = ref.per_head_outputs(z, b["W_O"])
    out = per_head.mean(2) if mean_heads else per_head.sum(2)
    return out + b["b_O"], pattern, scores


def _mistakes(cfg) -> dict[str, dict]:
    """Known mistakes in Attention, as switches of `_forward`."""
    factor = math.sqrt(cfg.d_model / cfg.d_head)
    return {
        f"scaled the scores by 1/sqrt(d_model) instead of 1/sqrt(d_head): off by a factor "
        f"sqrt(d_model/d_head) = {factor:.3g}": dict(scale=math.sqrt(cfg.d_model)),
        "forgot to scale the scores by 1/sqrt(d_head)": dict(scale=1.0),
        "masked the diagonal too: a query may attend to its own position": dict(
            mask="diagonal too", fill=-1e5
        ),
        "applied no causal mask": dict(mask="none"),
        "masked the past and kept the future (the future is key_posn > query_posn)": dict(
            mask="past"
        ),
        "took the softmax over queries instead of keys (the last axis)": dict(softmax_dim=-2),
        "masked after the softmax: mask the scores, then take the softmax": dict(mask_after=True),
        "averaged the heads' outputs instead of summing them": dict(mean_heads=True),
        **{f"forgot the bias {name}": dict(drop=(name,)) for name in ["b_Q", "b_K", "b_V", "b_O"]},
    }


@exercise(ref.single_head_scores)
def check_single_head_scores(check, single_head_scores):
    for i, (n_q, n_k, d_head, scale) in enumerate(
        [(1, 1, 4, 1.0), (5, 5, 8, 1.0), (3, 7, 16, 1.0), (32, 32, 12, 0.01), (6, 6, 64, 10.0)]
    ):
        with check.case(f"{n_q} queries, {n_k} keys, d_head {d_head}, inputs ×{scale:g}"):
            gen = seeded(i)
            q, k = (torch.randn(n, d_head, generator=gen) * scale for n in (n_q, n_k))
            expected = ref.single_head_scores(q, k)
            mistakes = _scale_mistakes(expected, d_head)
            if n_q == n_k > 1:
                mistakes["swapped queries and keys: row i holds query i's scores"] = expected.T
            got = check.call(single_head_scores, q, k)
            check.tensor(got, expected, what="scores", mistakes=mistakes)


@exercise(ref.attention_scores)
def check_attention_scores(check, attention_scores):
    for i, (cfg, batch, posn, scale) in enumerate(CASES):
        with check.case(_describe(cfg, batch, posn, scale)):
            gen = seeded(10 + i)
            q, k = (
                torch.randn(batch, posn, cfg.n_heads, cfg.d_head, generator=gen) * scale
                for _ in "qk"
            )
            expected = ref.attention_scores(q, k)
            mistakes = _scale_mistakes(expected, cfg.d_head, cfg.d_model)
            if posn > 1:
                mistakes["swapped queries and keys: row i holds query i's scores"] = (
                    expected.transpose(-1, -2)
                )
            got = check.call(attention_scores, q, k)
            check.tensor(got, expected, what="scores", mistakes=mistakes)


@exercise(ref.apply_causal_mask)
def check_apply_causal_mask(check, apply_causal_mask):
    for i, (batch, n_heads, posn, scale) in enumerate(
        [(1, 1, 1, 1.0), (2, 3, 5, 1.0), (1, 4, 32, 1.0), (3, 2, 7, 1e-3), (2, 2, 6, 300.0)]
    ):
        with check.case(f"batch {batch}, {n_heads} heads, {posn} positions, scores ×{scale:g}"):
            scores = torch.randn(batch, n_heads, posn, posn, generator=seeded(20 + i)) * scale
            got = check.call(apply_causal_mask, scores)
            _compare_masked(check, got, scores, what="masked scores")


@exercise(ref.Attention)
def check_attention(check, Attention):
    for i, (cfg, batch, posn, scale) in enumerate(CASES):
        with check.case(_describe(cfg, batch, posn, scale)):
            reference = randomize(ref.Attention(cfg), seed=30 + i, scale=0.2)
            attn = check.build(Attention, cfg)
            check.load_weights(attn, reference)
            x = torch.randn(batch, posn, cfg.d_model, generator=seeded(40 + i)) * scale
            wrong = {m: _forward(reference, x, **kw) for m, kw in _mistakes(cfg).items()}
            _, _, raw = _forward(reference, x, mask="none")
            raw_mistakes = {
                m: _forward(reference, x, **{**kw, "mask": "none"})[2]
                for m, kw in _mistakes(cfg).items()
            }
            raw_mistakes.update(_scale_mistakes(raw, cfg.d_head, cfg.d_model))
            rtol = RTOL[scale]
            got = check.call(attn.attn_scores, x, what="Attention.attn_scores")
            _compare_masked(check, got, raw, what="attn_scores", mistakes=raw_mistakes, rtol=rtol)
            got = check.call(attn.pattern, x, what="Attention.pattern")
            _compare_pattern(
                check,
                got,
                reference.pattern(x),
                what="pattern",
                rtol=rtol,
                mistakes={m: w[1] for m, w in wrong.items()},
            )
            got = check.call(attn, x, what="Attention.forward")
            got = _first_checks(check, got, reference(x), "attention output")
            check.tensor(
                got,
                reference(x),
                what="attention output",
                rtol=rtol,
                mistakes={m: w[0] for m, w in wrong.items()},
            )


def _z_and_W_O(i, batch, posn, n_heads, d_head, d_model, scale):
    gen = seeded(50 + i)
    z = torch.randn(batch, posn, n_heads, d_head, generator=gen) * scale
    return z, torch.randn(n_heads, d_head, d_model, generator=gen) / math.sqrt(d_head)


HEAD_CASES = [
    (1, 1, 1, 4, 8, 1.0),
    (2, 5, 4, 12, 48, 1.0),
    (3, 7, 3, 8, 48, 0.01),
    (2, 32, 4, 12, 48, 10.0),
]


@exercise(ref.concat_heads_then_project)
def check_concat_heads_then_project(check, concat_heads_then_project):
    for i, shape in enumerate(HEAD_CASES):
        batch, posn, n_heads, d_head, d_model, scale = shape
        with check.case(
            f"batch {batch}, {posn} positions, {n_heads} heads of {d_head}, "
            f"d_model {d_model}, z ×{scale:g}"
        ):
            z, W_O = _z_and_W_O(i, *shape)
            mixed = einops.rearrange(z, "b p h d -> b p (d h)") @ einops.rearrange(
                W_O, "h d m -> (h d) m"
            )
            got = check.call(concat_heads_then_project, z, W_O)
            check.tensor(
                got,
                ref.concat_heads_then_project(z, W_O),
                what="output",
                mistakes={
                    "flattened z as (d_head n_heads) but W_O as (n_heads "
                    "d_head): both must put the heads in the same order": mixed
                },
            )


@exercise(ref.per_head_outputs)
def check_per_head_outputs(check, per_head_outputs):
    for i, shape in enumerate(HEAD_CASES):
        batch, posn, n_heads, d_head, d_model, scale = shape
        with check.case(
            f"batch {batch}, {posn} positions, {n_heads} heads of {d_head}, "
            f"d_model {d_model}, z ×{scale:g}"
        ):
            z, W_O = _z_and_W_O(i, *shape)
            got = check.call(per_head_outputs, z, W_O)
            check.tensor(got, ref.per_head_outputs(z, W_O), what="per-head outputs")
        with check.case(f"{n_heads} heads: the per-head outputs add up to concat-then-W_O"):
            check.tensor(
                got.sum(dim=2),
                ref.concat_heads_then_project(z, W_O),
                what="sum over heads of your per-head outputs",
            )


def _merged_cases(check, learner_fn, reference_fn, name):
    """Yield (cfg, attn, got) for random layers: values checked, rank at most d_head."""
    for i, cfg in enumerate([TINY, ODD, TINY.but(d_head=1, n_heads=2)]):
        attn = randomize(ref.Attention(cfg), seed=60 + i, scale=0.2)
        with check.case(f"{name} of a random layer, {cfg.n_heads} heads of d_head {cfg.d_head}"):
            expected = reference_fn(attn)
            transposed = expected.transpose(-1, -2)
            got = check.call(learner_fn, attn, what=name)
            why = "transposed each head's matrix (the two factors in the wrong order)"
            check.tensor(got, expected, what=name, mistakes={why: transposed})
        with check.case(f"{name}: every head's rank is at most d_head = {cfg.d_head}"):
            ranks = torch.linalg.matrix_rank(got.detach())
            if (ranks > cfg.d_head).any():
                check.fail(f"your {name} has ranks {ranks.tolist()}, above d_head.")
        yield cfg, attn, got.detach()


@exercise(ref.w_qk)
def check_w_qk(check, w_qk):
    for cfg, attn, W_QK in _merged_cases(check, w_qk, ref.w_qk, "W_QK"):
        with check.case("scores through W_QK equal attn_scores (with b_Q = b_K = 0)"):
            with torch.no_grad():
                attn.b_Q.zero_(), attn.b_K.zero_()
            x = torch.randn(2, 6, cfg.d_model, generator=seeded(cfg.d_head))
            q, k = (einops.einsum(x, W, "b p m, h m d -> b p h d") for W in (attn.W_Q, attn.W_K))
            scores = einops.einsum(x, W_QK, x, "b q m, h m n, b k n -> b h q k")
            check.tensor(
                scores / math.sqrt(cfg.d_head),
                ref.attention_scores(q, k).detach(),
                what="scores through your W_QK",
            )


@exercise(ref.w_ov)
def check_w_ov(check, w_ov):
    for cfg, attn, W_OV in _merged_cases(check, w_ov, ref.w_ov, "W_OV"):
        with check.case("attended position's v through W_O equals x through W_OV (b_V = 0)"):
            x = torch.randn(5, cfg.d_model, generator=seeded(cfg.d_head))
            check.tensor(
                einops.einsum(x, W_OV, "p m, h m n -> h p n"),
                (x @ attn.W_V @ attn.W_O).detach(),
                what="x @ W_OV",
            )


@exercise(ref.head_output_with_frozen_pattern)
def check_head_output_with_frozen_pattern(check, head_output_with_frozen_pattern):
    f = head_output_with_frozen_pattern
    for i, (cfg, batch, posn, scale) in enumerate(CASES):
        attn = randomize(ref.Attention(cfg), seed=70 + i, scale=0.2)
        gen = seeded(80 + i)
        x, y = (torch.randn(batch, posn, cfg.d_model, generator=gen) * scale for _ in "xy")
        # The frozen pattern comes from another input: the head must not recompute it.
        patterns = attn.pattern(torch.randn(batch, posn, cfg.d_model, generator=gen)).detach()
        head = i % cfg.n_heads
        pattern = patterns[:, head]
        with check.case(_describe(cfg, batch, posn, scale) + f", head {head}"):
            with torch.no_grad():
                expected = ref.head_output_with_frozen_pattern(attn, head, x, pattern)
                v, W_O = x @ attn.W_V[head] + attn.b_V[head], attn.W_O[head]
                own_pattern = attn.pattern(x)[:, head]
                mistakes = {
                    "added b_O, which belongs to the layer": expected + attn.b_O,
                    "forgot b_V": pattern @ x @ attn.W_V[head] @ W_O,
                    "recomputed the pattern from x instead of using the one given": (
                        own_pattern @ v @ W_O
                    ),
                    "used the pattern transposed (rows are queries)": pattern.mT @ v @ W_O,
                }
            got = check.call(f, attn, head, x, pattern, what="head_output_with_frozen_pattern")
            check.tensor(got, expected, what="head output", mistakes=mistakes)
        with check.case("affine in the stream: f(a·x + b·y) = a·f(x) + b·f(y) when a + b = 1"):
            a, b = 1.7, -0.7
            check.tensor(
                check.call(f, attn, head, a * x + b * y, pattern).detach(),
                a * got.detach() + b * f(attn, head, y, pattern).detach(),
                what="output for a·x + b·y",
            )
        with check.case("linear once the biases are zero: f(a·x + b·y) = a·f(x) + b·f(y)"):
            with torch.no_grad():
                attn.b_V.zero_()
            a, b = 2.0, -3.0
            check.tensor(
                check.call(f, attn, head, a * x + b * y, pattern).detach(),
                a * f(attn, head, x, pattern).detach() + b * f(attn, head, y, pattern),
                what="output for a·x + b·y",
            )
    with check.case("the heads' outputs with their own patterns, plus b_O, are attn_out"):
        heads = [f(attn, h, x, attn.pattern(x)[:, h]) for h in range(cfg.n_heads)]
        check.tensor(
            sum(heads).detach() + attn.b_O.detach(), attn(x).detach(), what="sum over heads + b_O"
        )


def _count_hint(got, expected, wrong_by: dict[str, int]) -> str:
    """The explanation of the first known wrong count that `got` equals, if any."""
    for why, value in wrong_by.items():
        if got == value and value != expected:
            return " " + why
    return ""


@exercise(ref.kv_cache_bytes)
def check_kv_cache_bytes(check, kv_cache_bytes):
    for cfg, name, n, per in [
        (GPT2_SMALL, "GPT-2 small", 1024, 4),
        (GPT2_SMALL, "GPT-2 small", 1, 2),
        (TINY, "TINY", 32, 4),
        (ODD.but(n_layers=3), "ODD", 7, 2),
    ]:
        with check.case(f"{name}, {n} tokens, {per} bytes per value"):
            expected = ref.kv_cache_bytes(cfg, n, per)
            got = check.call(kv_cache_bytes, cfg, n, per)
            wrong_by = {
                "That is half: both keys and values are cached.": expected // 2,
                "Every layer keeps its own cache: multiply by n_layers.": expected // cfg.n_layers,
                "Multiply by bytes_per_value.": expected // per,
                "A token's key is n_heads·d_head values, not d_model.": expected
                // (cfg.n_heads * cfg.d_head)
                * cfg.d_model,
            }
            hint = _count_hint(got, expected, wrong_by)
            check.equal(got, expected, what="number of bytes", hint=hint)
    with check.case("bytes_per_value defaults to 4 (float32)"):
        check.equal(
            check.call(kv_cache_bytes, TINY, 5),
            ref.kv_cache_bytes(TINY, 5),
            what="number of bytes for kv_cache_bytes(TINY, 5)",
        )


def _counted_flops(cfg, n: int) -> int:
    """FLOPs that torch counts for one layer's q kᵀ and pattern · v, times n_layers."""
    q, k, v = (torch.randn(1, n, cfg.n_heads, cfg.d_head) for _ in "qkv")
    with FlopCounterMode(display=False) as counter:
        pattern = ref.apply_causal_mask(ref.attention_scores(q, k)).softmax(-1)
        einops.einsum(pattern, v, "b h q k, b k h d -> b q h d")
    return counter.get_total_flops() * cfg.n_layers


@exercise(ref.attention_flops)
def check_attention_flops(check, attention_flops):
    for cfg, name, n in [
        (GPT2_SMALL, "GPT-2 small", 1024),
        (TINY, "TINY", 1),
        (TINY, "TINY", 32),
        (ODD.but(n_layers=3), "ODD", 9),
    ]:
        with check.case(f"{name}, context {n}"):
            expected = ref.attention_flops(cfg, n)
            got = check.call(attention_flops, cfg, n)
            wrong_by = {
                "That is half: count both products (q kᵀ and pattern · v), and 2 FLOPs per "
                "multiply-add.": expected // 2,
                "Each product takes n_ctx² · d_head multiply-adds: the cost is quadratic in the "
                "context.": expected // n,
                "Every layer has its heads: multiply by n_layers.": expected // cfg.n_layers,
                "The heads together work in n_heads·d_head dimensions, not d_model.": expected
                // (cfg.n_heads * cfg.d_head)
                * cfg.d_model,
            }
            hint = _count_hint(got, expected, wrong_by)
            check.equal(got, expected, what="number of FLOPs", hint=hint)
    for n in [4, 16]:
        with check.case(f"agrees with the FLOPs torch counts, ODD, context {n}"):
            check.equal(
                check.call(attention_flops, ODD, n),
                _counted_flops(ODD, n),
                what="number of FLOPs (torch's FlopCounterMode counts the products)",
            )
