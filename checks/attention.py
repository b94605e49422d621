"""Checkers for chapter 2 (solutions/attention.py).

Every check uses random weights, biases included, on TINY (d_model = n_heads·d_head, as
in GPT-2) and on NARROW_HEADS (where they differ, so that mixing them up shows; "ODD" in the
cases' names). Masked scores may
hold -inf, as in ARENA and TransformerLens's HookedTransformer, or any large negative number
such as the -1e5 of their earlier versions or HuggingFace's torch.finfo(dtype).min: all give
the same pattern, so all pass.
"""

import math

import einops
import torch
import torch.nn.functional as F

from checks import _sdpa_diagnosis as sdpa
from checks._attention_diagnosis import (
    compare_masked,
    compare_pattern,
    count_hint,
    counted_flops,
    diagnose_previous_token,
    first_checks,
    forward_with_mistake,
    known_mistakes,
    merged_cases,
    previous_token_mistakes,
    require_int,
    scale_mistakes,
)
from checks._configs import NARROW_HEADS
from checks._core import exercise, plural, randomize, scaled, seeded
from solutions import attention as ref
from solutions.config import GPT2_SMALL, TINY

__all__ = [
    "check_single_head_scores",
    "check_attention_scores",
    "check_apply_causal_mask",
    "check_scaled_dot_product_attention",
    "check_attention",
    "check_previous_token_pattern",
    "check_previous_token_qk",
    "check_concat_heads_then_project",
    "check_per_head_outputs",
    "check_w_qk",
    "check_w_ov",
    "check_head_output_with_frozen_pattern",
    "check_kv_cache_bytes",
    "check_attention_flops",
]

# (config, batch, positions, input scale): one position, a full context, tiny and large inputs.
CASES = [
    (TINY, 1, 1, 1.0),
    (TINY, 2, 5, 1.0),
    (NARROW_HEADS, 3, 7, 1.0),
    (TINY, 2, TINY.n_ctx, 1.0),
    (NARROW_HEADS, 2, 6, 0.01),
    (TINY, 2, 9, 10.0),
]
# Softmax turns an error e in a score into a relative error e in the pattern; scores of
# inputs ×10 are ~100, so float32 rounding alone reaches ~1e-4: allow 1e-3 there.
RTOL = {0.01: 1e-4, 1.0: 1e-4, 10.0: 1e-3}


def _describe(cfg, batch, posn, scale) -> str:
    name = "TINY" if cfg == TINY else "ODD"
    return f"{name}, batch {batch}, {plural(posn, 'position')}" + scaled("inputs", scale)


@exercise(ref.single_head_scores)
def check_single_head_scores(check, single_head_scores):
    for i, (n_q, n_k, d_head, scale) in enumerate(
        [(5, 5, 8, 1.0), (1, 1, 4, 1.0), (3, 7, 16, 1.0), (32, 32, 12, 0.01), (6, 6, 64, 10.0)]
    ):
        with check.case(
            f"{plural(n_q, 'query', 'queries')}, {plural(n_k, 'key')}, d_head {d_head}"
            + scaled("inputs", scale)
        ):
            gen = seeded(i)
            q, k = (torch.randn(n, d_head, generator=gen) * scale for n in (n_q, n_k))
            expected = ref.single_head_scores(q, k)
            mistakes = scale_mistakes(expected, d_head)
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
            mistakes = scale_mistakes(expected, cfg.d_head, cfg.d_model)
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
        with check.case(
            f"batch {batch}, {plural(n_heads, 'head')}, {plural(posn, 'position')}"
            + scaled("scores", scale)
        ):
            scores = torch.randn(batch, n_heads, posn, posn, generator=seeded(20 + i)) * scale
            got = check.call(apply_causal_mask, scores)
            compare_masked(check, got, scores, what="masked scores")


@exercise(ref.scaled_dot_product_attention)
def check_scaled_dot_product_attention(check, scaled_dot_product_attention):
    f = scaled_dot_product_attention
    for i, case in enumerate(sdpa.CASES):
        with check.case(sdpa.describe(*case)):
            Q, K, V, mask = sdpa.inputs(i, *case)
            args = (Q, K, V) if mask is None else (Q, K, V, mask)
            expected = ref.scaled_dot_product_attention(*args)
            got = check.call(f, *args)
            rtol = 1e-3 if case[-1] > 10 else 1e-4
            mistakes = sdpa.mistakes(Q, K, V, mask)
            check.tensor(got, expected, what="output", mistakes=mistakes, rtol=rtol)
        if mask is not None and case[-1] == 1.0:
            with check.case(f"agrees with F.scaled_dot_product_attention ({case[-2]} mask)"):
                torch_says = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
                check.tensor(got.detach(), torch_says, what="output")
    with check.case("queries whose keys are all masked read nothing: zeros"):
        Q, K, V, mask = sdpa.fully_masked_inputs()
        expected = ref.scaled_dot_product_attention(Q, K, V, mask)
        got = sdpa.diagnose_fully_masked(check, check.call(f, Q, K, V, mask), V, mask, expected)
        check.tensor(got, expected, what="output", mistakes=sdpa.mistakes(Q, K, V, mask))


@exercise(ref.Attention)
def check_attention(check, Attention):
    for i, (cfg, batch, posn, scale) in enumerate(CASES):
        with check.case(_describe(cfg, batch, posn, scale)):
            reference = randomize(ref.Attention(cfg), seed=30 + i, scale=0.2)
            attn = check.build(Attention, cfg)
            check.load_weights(attn, reference)
            x = torch.randn(batch, posn, cfg.d_model, generator=seeded(40 + i)) * scale
            wrong = {
                m: forward_with_mistake(reference, x, **kw) for m, kw in known_mistakes(cfg).items()
            }
            _, _, raw = forward_with_mistake(reference, x, mask="none")
            # Only a wrong scale or a missing b_Q or b_K changes the scores before the mask.
            raw_mistakes = {
                m: forward_with_mistake(reference, x, **{**kw, "mask": "none"})[2]
                for m, kw in known_mistakes(cfg).items()
                if "scale" in kw or {"b_Q", "b_K"} & set(kw.get("drop", ()))
            }
            raw_mistakes.update(scale_mistakes(raw, cfg.d_head, cfg.d_model))
            rtol = RTOL[scale]
            got = check.call(attn.attn_scores, x, what="Attention.attn_scores")
            compare_masked(check, got, raw, what="attn_scores", mistakes=raw_mistakes, rtol=rtol)
            got = check.call(attn.pattern, x, what="Attention.pattern")
            compare_pattern(
                check,
                got,
                reference.pattern(x),
                what="pattern",
                rtol=rtol,
                mistakes={m: w[1] for m, w in wrong.items()},
            )
            got = check.call(attn, x, what="Attention.forward")
            got = first_checks(check, got, reference(x), "attention output")
            check.tensor(
                got,
                reference(x),
                what="attention output",
                rtol=rtol,
                mistakes={m: w[0] for m, w in wrong.items()},
            )


@exercise(ref.previous_token_pattern)
def check_previous_token_pattern(check, previous_token_pattern):
    for n in [6, 32, 2, 1]:
        with check.case(f"{n} positions"):
            got = check.call(previous_token_pattern, n)
            check.tensor(
                got,
                ref.previous_token_pattern(n),
                what="pattern",
                mistakes=previous_token_mistakes(n),
            )


def _toy_sentences() -> list[list[str]]:
    """Word lists for toy streams: the shortest, a sentence with repeats, a full context."""
    words = "the cat sat on a mat and then it slept".split()
    picks = torch.randint(len(words), (31,), generator=seeded(90)).tolist()
    return [
        "<bos> the cat sat on the mat and the cat slept".split(),
        ["<bos>"] + [words[i] for i in picks],
        ["<bos>", "the"],
    ]


@exercise(ref.previous_token_qk)
def check_previous_token_qk(check, previous_token_qk):
    cfg = ref.HANDMADE
    with check.case("returns (W_Q, W_K), each [d_model, d_head]"):
        got = check.call(previous_token_qk, cfg)
        got = check.pair(got, "(W_Q, W_K)")
        for name, W in zip(["W_Q", "W_K"], got, strict=True):
            if not isinstance(W, torch.Tensor) or W.shape != (cfg.d_model, cfg.d_head):
                shape = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
                check.fail(f"your {name} is {shape}, expected a tensor of shape (64, 16).")
    attn = ref.Attention(cfg)
    with torch.no_grad():
        for p in attn.parameters():
            p.zero_()
        attn.W_Q[0], attn.W_K[0] = got
    for words in _toy_sentences():
        with check.case(f"head 0's pattern on a toy stream of {len(words)} words"):
            pattern = attn.pattern(ref.toy_stream(words, cfg)[None])[0, 0].detach()
            diagnose_previous_token(check, pattern)


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
            f"batch {batch}, {plural(posn, 'position')}, {plural(n_heads, 'head')}, "
            f"d_head {d_head}, d_model {d_model}" + scaled("z", scale)
        ):
            z, W_O = _z_and_W_O(i, *shape)
            mixed = einops.rearrange(z, "b p h d -> b p (d h)") @ einops.rearrange(
                W_O, "h d m -> (h d) m"
            )
            mixed_W_O = einops.rearrange(z, "b p h d -> b p (h d)") @ einops.rearrange(
                W_O, "h d m -> (d h) m"
            )
            got = check.call(concat_heads_then_project, z, W_O)
            check.tensor(
                got,
                ref.concat_heads_then_project(z, W_O),
                what="output",
                mistakes={
                    "flattened z as (d_head n_heads) but W_O as (n_heads "
                    "d_head): both must put the heads in the same order": mixed,
                    "flattened z as (n_heads d_head) but W_O as (d_head n_heads): both "
                    "must put the heads in the same order": mixed_W_O,
                },
            )


@exercise(ref.per_head_outputs)
def check_per_head_outputs(check, per_head_outputs):
    for i, shape in enumerate(HEAD_CASES):
        batch, posn, n_heads, d_head, d_model, scale = shape
        with check.case(
            f"batch {batch}, {plural(posn, 'position')}, {plural(n_heads, 'head')}, "
            f"d_head {d_head}, d_model {d_model}" + scaled("z", scale)
        ):
            z, W_O = _z_and_W_O(i, *shape)
            got = check.call(per_head_outputs, z, W_O)
            check.tensor(got, ref.per_head_outputs(z, W_O), what="per-head outputs")
        with check.case(
            f"the per-head outputs add up to concat-then-W_O, {plural(n_heads, 'head')}"
        ):
            check.tensor(
                got.sum(dim=2),
                ref.concat_heads_then_project(z, W_O),
                what="sum over heads of your per-head outputs",
            )


@exercise(ref.w_qk)
def check_w_qk(check, w_qk):
    for cfg, attn, W_QK in merged_cases(check, w_qk, ref.w_qk, "W_QK"):
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
    for cfg, attn, W_OV in merged_cases(check, w_ov, ref.w_ov, "W_OV"):
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
        with check.case(f"head {head} of " + _describe(cfg, batch, posn, scale)):
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


@exercise(ref.kv_cache_bytes)
def check_kv_cache_bytes(check, kv_cache_bytes):
    for cfg, name, n, per in [
        (GPT2_SMALL, "GPT-2 small", 1024, 4),
        (GPT2_SMALL, "GPT-2 small", 1, 2),
        (TINY, "TINY", 32, 4),
        (NARROW_HEADS.but(n_layers=3), "ODD", 7, 2),
    ]:
        with check.case(f"{name}, {plural(n, 'token')}, {plural(per, 'byte')} per value"):
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
            got = require_int(check, got, "number of bytes")
            hint = count_hint(got, expected, wrong_by)
            check.equal(got, expected, what="number of bytes", hint=hint)
    with check.case("bytes_per_value defaults to 4 (float32)"):
        check.equal(
            check.call(kv_cache_bytes, TINY, 5),
            ref.kv_cache_bytes(TINY, 5),
            what="number of bytes for kv_cache_bytes(TINY, 5)",
        )


@exercise(ref.attention_flops)
def check_attention_flops(check, attention_flops):
    for cfg, name, n in [
        (GPT2_SMALL, "GPT-2 small", 1024),
        (TINY, "TINY", 1),
        (TINY, "TINY", 32),
        (NARROW_HEADS.but(n_layers=3), "ODD", 9),
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
                "Count the whole n_ctx × n_ctx square, as a dense kernel computes it, not only "
                "the causal half.": expected // (n * n) * (n * (n + 1) // 2),
                "The heads together work in n_heads·d_head dimensions, not d_model.": expected
                // (cfg.n_heads * cfg.d_head)
                * cfg.d_model,
            }
            got = require_int(check, got, "number of FLOPs")
            hint = count_hint(got, expected, wrong_by)
            check.equal(got, expected, what="number of FLOPs", hint=hint)
    for n in [4, 16]:
        with check.case(f"agrees with the FLOPs torch counts, ODD, context {n}"):
            check.equal(
                check.call(attention_flops, NARROW_HEADS, n),
                counted_flops(NARROW_HEADS, n),
                what="number of FLOPs (torch's FlopCounterMode counts the products)",
            )
