"""Checkers for chapter 6's napkin math (solutions/scaling.py).

Counts are checked on GPT-2 small, on TINY, on NARROW_HEADS_MLP_100 ("ODD" in the cases'
names: n_heads·d_head differs from d_model and d_mlp from 4·d_model, so that a formula leaning
on either shows) and on a Llama-3-8B-sized
config; a wrong count is matched against the counts the usual slips give, to name the slip.
"""

import math
from numbers import Real

import numpy as np
import torch

from checks._configs import NARROW_HEADS_MLP_100
from checks._core import exercise, kind_of, seeded
from solutions import scaling as ref
from solutions.attention import attention_flops
from solutions.config import COURSE_MODEL, GPT2_SMALL, TINY, Config
from solutions.transformer import Transformer

__all__ = [
    "check_approx_params",
    "check_exact_params",
    "check_training_flops",
    "check_chinchilla_optimal",
    "check_propose_config",
    "check_kv_bytes_per_token",
    "check_count_training_flops",
    "check_fit_power_law",
    "check_isoflop_minimum",
]

CONFIGS = [
    (GPT2_SMALL, "GPT-2 small"),
    (TINY, "TINY"),
    (NARROW_HEADS_MLP_100, "ODD (n_heads·d_head ≠ d_model, d_mlp = 100)"),
    (ref.LLAMA3_8B, "Llama-3-8B-sized"),
]


def _number(check, got, what: str) -> float:
    """A learner's count as a number, or a verdict that it is not one."""
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, np.generic):
        got = got.item()
    if got is None:
        check.fail(f"your code returned None for the {what}: did you forget `return`?")
    if isinstance(got, bool) or not isinstance(got, Real):
        check.fail(f"the {what} should be a number, got {kind_of(got)}.")
    if not math.isfinite(got):
        check.fail(f"the {what} is {got}, expected a finite number.")
    return got


def _number_pair(check, got, pair: str, names: tuple[str, str], expected, swapped: str):
    """A learner's pair of numbers (`pair` as "(a, b)", `names` each number's description);
    the expected pair returned the other way round fails with the verdict `swapped`."""
    first, second = check.pair(got, pair)
    first, second = _number(check, first, names[0]), _number(check, second, names[1])
    if _same(first, expected[1], 1e-6) and _same(second, expected[0], 1e-6):
        check.fail(swapped)
    return first, second


def _same(a: float, b: float, rtol: float = 1e-9) -> bool:
    # Relative to b alone: a power law's coefficient can be 3e-9, where an absolute floor of
    # rtol would accept almost anything.
    return abs(a - b) <= rtol * abs(b) if b else abs(a) <= rtol


def _count(check, got, expected, what: str, wrong_by: dict[str, float], rtol=1e-9) -> None:
    """Compare a count; if it equals what a known slip gives, say which."""
    got = _number(check, got, what)
    if _same(got, expected, rtol):
        return
    # A count that two slips share (with 2 bytes per value, halving is ambiguous) names neither.
    named = [
        why
        for why, value in wrong_by.items()
        if _same(got, value, rtol) and not _same(value, expected, rtol)
    ]
    if len(named) == 1:
        check.fail(f"the {what} is {got:,.6g}, expected {expected:,.6g}. {named[0]}")
    check.fail(
        f"the {what} is {got:,.6g}, expected {expected:,.6g} ({(got - expected) / expected:+.2%})."
    )


@exercise(ref.approx_params)
def check_approx_params(check, approx_params):
    for cfg, name in CONFIGS:
        with check.case(name):
            d, L, V = cfg.d_model, cfg.n_layers, cfg.d_vocab
            expected = ref.approx_params(cfg)
            got = check.call(approx_params, cfg)
            wrong_by = {
                "Add V·d: the embedding matrix is a large part of a small model.": expected - V * d,
                "Count the embedding once: the formula is for a tied unembedding.": expected
                + V * d,
                "k is d_mlp / d_model, which is not always 4.": V * d + L * 12 * d * d,
                "Every one of the n_layers layers has its matrices: multiply by n_layers.": V * d
                + (4 * d * d + 2 * d * cfg.d_mlp),
                "The MLP has two matrices, W_in and W_out: 2·k·d².": V * d
                + L * (4 * d * d + d * cfg.d_mlp),
                "Attention has four d×d matrices: W_Q, W_K, W_V and W_O.": V * d
                + L * (3 * d * d + 2 * d * cfg.d_mlp),
            }
            _count(check, got, expected, "parameter count", wrong_by)


@exercise(ref.exact_params)
def check_exact_params(check, exact_params):
    for cfg, name in [*CONFIGS[:3], (COURSE_MODEL, "COURSE_MODEL")]:
        for tied in [False, True]:
            with check.case(f"{name}, {'tied' if tied else 'untied'}"):
                d, L, V = cfg.d_model, cfg.n_layers, cfg.d_vocab
                heads = cfg.n_heads * cfg.d_head
                expected = ref.exact_params(cfg, tied)
                got = check.call(exact_params, cfg, tied)
                biases = L * (3 * heads + d + cfg.d_mlp + d) + (0 if tied else V)
                wrong_by = {
                    "Count the biases: b_Q, b_K, b_V (n_heads·d_head each), b_O, b_in, b_out"
                    + ("." if tied else " and b_U."): expected - biases,
                    "Count the LayerNorms: w and b, two per block and the final one.": expected
                    - (4 * d * L + 2 * d),
                    "Count the final LayerNorm, ln_final (w and b).": expected - 2 * d,
                    "LayerNorm has a bias b as well as a weight w.": expected - (2 * d * L + d),
                    "Count the positional embedding W_pos, n_ctx·d_model.": expected
                    - cfg.n_ctx * d,
                    "Count the unembedding's bias b_U, d_vocab numbers.": expected - V,
                    "The tied layout has no b_U: GPT-2's unembedding is W_Eᵀ, without a bias.": (
                        expected + V
                    ),
                    "Tied, the unembedding reuses W_E: do not count W_U.": expected + V * d,
                    "Tied, the unembedding is W_Eᵀ without a bias: count neither W_U nor b_U.": (
                        expected + V * d + V
                    ),
                    "W_Q, W_K, W_V, W_O are d_model × (n_heads·d_head), which is not always "
                    "d_model × d_model.": expected + L * (4 * d * (d - heads) + 3 * (d - heads)),
                }
                _count(check, got, expected, "parameter count", wrong_by)
    with check.case("tied defaults to False"):
        got = check.call(exact_params, TINY)
        _count(check, got, ref.exact_params(TINY), "count for exact_params(TINY)", {})


@exercise(ref.training_flops)
def check_training_flops(check, training_flops):
    for n, d in [(124_439_808, 2_488_796_160), (70_000_000_000, 1_400_000_000_000), (1, 1)]:
        with check.case(f"{n:,} parameters, {d:,} tokens"):
            expected = ref.training_flops(n, d)
            got = check.call(training_flops, n, d)
            wrong_by = {
                "That is the forward pass alone: the backward pass costs twice as much again, "
                "so 6 FLOPs per parameter and token.": 2 * n * d,
                "A multiply-add is 2 FLOPs: 2 forward and 4 backward make 6 per parameter and "
                "token.": 3 * n * d,
            }
            _count(check, got, expected, "number of FLOPs", wrong_by)


@exercise(ref.chinchilla_optimal)
def check_chinchilla_optimal(check, chinchilla_optimal):
    for compute in [5.76e23, 1e21, 6 * 124e6 * 2.48e9, 1e15]:
        with check.case(f"compute {compute:.3g} FLOPs"):
            n, d = ref.chinchilla_optimal(compute)
            got_n, got_d = _number_pair(
                check,
                check.call(chinchilla_optimal, compute),
                "(n_params, n_tokens)",
                ("number of parameters", "number of tokens"),
                (n, d),
                "you returned (n_tokens, n_params): return the parameters first.",
            )
            _count(
                check,
                got_n,
                n,
                "number of parameters",
                {
                    "Solve C = 6·N·D with D = 20·N: C = 120·N², so N = sqrt(C / 120).": math.sqrt(
                        compute / 6
                    ),
                    "C = 120·N² is quadratic in N: take the square root.": compute / 120,
                    "C = 6·N·D: with D = 20·N that is 120·N², not 20·N².": math.sqrt(compute / 20),
                },
                rtol=1e-6,
            )
            _count(
                check,
                got_d,
                d,
                "number of tokens",
                {"About 20 tokens per parameter: D = 20·N, not N / 20.": n / 20},
                rtol=1e-6,
            )


# Budgets every allowed shape can meet within 10% (small budgets with a large vocabulary
# cannot: the embedding alone overshoots).
BUDGETS = [
    (124e6, 50257),
    (50e6, 50257),
    (350e6, 32000),
    (1.5e9, 50257),
    (8e9, 128256),
    (30e6, 512),  # a small vocabulary: a shape planned for 50,257 tokens misses by far
]
BUDGET_RTOL = 0.1


@exercise(ref.propose_config)
def check_propose_config(check, propose_config):
    for n_params, d_vocab in BUDGETS:
        with check.case(f"{n_params:,.0f} parameters, vocabulary of {d_vocab:,}"):
            cfg = check.call(propose_config, n_params, d_vocab)
            if not isinstance(cfg, Config):
                check.fail(f"return a Config, not {kind_of(cfg)}.")
            d = cfg.d_model
            shape = f"d_model {d}, n_layers {cfg.n_layers}, n_heads {cfg.n_heads}"
            if cfg.d_vocab != d_vocab:
                check.fail(f"your config has d_vocab {cfg.d_vocab}: keep the {d_vocab} given.")
            if cfg.d_head != 64:
                check.fail(f"your heads have d_head {cfg.d_head}: make them 64 wide.")
            if d % 128:
                check.fail(
                    f"{shape}: make d_model a multiple of 128 (matrix hardware works in tiles "
                    "of 64 or 128, and n_heads = d_model / 64 must be whole)."
                )
            if cfg.n_heads * cfg.d_head != d:
                check.fail(f"{shape}: n_heads · d_head must equal d_model.")
            if cfg.d_mlp != 4 * d:
                check.fail(f"your d_mlp is {cfg.d_mlp}: make it 4·d_model = {4 * d}.")
            if cfg.n_layers < 1 or not 32 <= d / cfg.n_layers <= 128:
                check.fail(
                    f"{shape}: that is {d / max(cfg.n_layers, 1):.0f} dimensions of width per "
                    "layer. Keep it between 32 and 128, as GPT-2 (33 to 64) and Llama 3 (128) do: "
                    + ("deeper and narrower." if d > 128 * cfg.n_layers else "wider and shallower.")
                )
            p = ref.approx_params(cfg)
            if abs(p / n_params - 1) > BUDGET_RTOL:
                blocks = p - d_vocab * d
                planned = ref.approx_params(cfg.but(d_vocab=50257))
                hint = (
                    " The embedding V·d counts too: it is a large share of a small model."
                    if abs(blocks / n_params - 1) <= BUDGET_RTOL
                    else f" Plan the embedding with the d_vocab given ({d_vocab:,}), not 50,257."
                    if d_vocab != 50257 and abs(planned / n_params - 1) <= BUDGET_RTOL
                    else ""
                )
                check.fail(
                    f"{shape}: approx_params gives {p:,}, {p / n_params - 1:+.0%} off the "
                    f"budget; stay within {BUDGET_RTOL:.0%}.{hint}"
                )


@exercise(ref.kv_bytes_per_token)
def check_kv_bytes_per_token(check, kv_bytes_per_token):
    for cfg, name, n_kv, per in [
        (GPT2_SMALL, "GPT-2 small", None, 4),
        (GPT2_SMALL, "GPT-2 small", None, 2),
        (ref.LLAMA3_8B, "Llama-3-8B-sized", ref.LLAMA3_8B_KV_HEADS, 2),
        (ref.LLAMA3_8B, "Llama-3-8B-sized", None, 2),
        (NARROW_HEADS_MLP_100.but(n_heads=6), "ODD with 6 heads", 2, 1),
        (NARROW_HEADS_MLP_100.but(n_heads=6), "ODD with 6 heads", 1, 4),
        (NARROW_HEADS_MLP_100, "ODD (n_heads·d_head ≠ d_model)", None, 2),
    ]:
        kv = "all heads" if n_kv is None else f"{n_kv} KV heads"
        with check.case(f"{name}, {kv}, {per} bytes per value"):
            expected = ref.kv_bytes_per_token(cfg, n_kv, per)
            got = check.call(kv_bytes_per_token, cfg, n_kv, per)
            heads = cfg.n_heads if n_kv is None else n_kv
            one = cfg.n_layers * cfg.d_head * per
            wrong_by = {
                "That is half: a token leaves both a key and a value.": heads * one,
                "Keys and values are cached per KV head: use n_kv_heads, not n_heads.": 2
                * cfg.n_heads
                * one,
                "Every layer keeps its own cache: multiply by n_layers.": expected // cfg.n_layers,
                "Multiply by bytes_per_value.": expected // per,
                "A head's key is d_head values, not d_model.": expected // cfg.d_head * cfg.d_model,
                "Read cfg.d_head: it is not always d_model / n_heads.": expected
                // cfg.d_head
                * (cfg.d_model // cfg.n_heads),
            }
            _count(check, got, expected, "number of bytes", wrong_by)
    with check.case("defaults: n_kv_heads = n_heads, 2 bytes per value"):
        got = check.call(kv_bytes_per_token, GPT2_SMALL)
        _count(check, got, ref.kv_bytes_per_token(GPT2_SMALL), "bytes for GPT-2 small", {})


@exercise(ref.count_training_flops)
def check_count_training_flops(check, count_training_flops):
    # On the meta device (shapes, no numbers): the count is the same, and nothing is computed.
    # Expected: 6·N·D plus attention's products, forward and backward (tests/test_scaling.py
    # proves it equals what torch counts on the reference).
    for cfg, name, batch, posn in [
        (TINY, "TINY", 2, 8),
        (NARROW_HEADS_MLP_100, "ODD", 3, NARROW_HEADS_MLP_100.n_ctx),
        (GPT2_SMALL.but(n_layers=2), "GPT-2 small's layers, 2 of them", 1, GPT2_SMALL.n_ctx),
    ]:
        with check.case(f"{name}, batch {batch} × {posn} tokens, on the meta device"):
            with torch.device("meta"):
                model = Transformer(cfg)
            tokens = torch.zeros(batch, posn, dtype=torch.long, device="meta")
            # The weights a token meets in a matmul: approx_params, once n_heads·d_head may
            # differ from d_model.
            d, heads = cfg.d_model, cfg.n_heads * cfg.d_head
            weights = cfg.d_vocab * d + cfg.n_layers * (4 * d * heads + 2 * d * cfg.d_mlp)
            expected = ref.training_flops(weights, batch * posn)
            expected += 3 * batch * attention_flops(cfg, posn)
            # Through a closure: check.call would compare the meta tokens before and after.
            got = check.call(
                lambda m, t=tokens: count_training_flops(m, t), model, what="count_training_flops"
            )
            wrong_by = {
                "That is the forward pass alone: call .backward() on the loss inside the "
                "`with FlopCounterMode(...)` block.": expected // 3,
            }
            _count(check, got, expected, "number of FLOPs", wrong_by)


@exercise(ref.fit_power_law)
def check_fit_power_law(check, fit_power_law):
    x = np.array([128, 256, 512, 1024, 2048])
    noise = torch.randn(5, generator=seeded(60), dtype=torch.float64).numpy() * 0.05
    for name, xs, ys in [
        ("exact quadratic, arrays", x, 3e-9 * x.astype(float) ** 2),
        (
            "exact power -0.076, lists",
            [1e6, 1e7, 1e8, 1e9],
            [2.3 * n**-0.076 for n in [1e6, 1e7, 1e8, 1e9]],
        ),
        ("noisy, arrays", x, 2e-8 * x.astype(float) ** 1.8 * np.exp(noise)),
    ]:
        with check.case(name):
            a, b = ref.fit_power_law(xs, ys)
            got_a, got_b = _number_pair(
                check,
                check.call(fit_power_law, xs, ys),
                "(a, b)",
                ("exponent a", "coefficient b"),
                (a, b),
                "you returned (b, a): return the exponent first.",
            )
            slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
            _count(
                check,
                got_a,
                a,
                "exponent a",
                {"Fit a line to log y against log x, not to y against x.": slope},
                rtol=1e-6,
            )
            _count(
                check,
                got_b,
                b,
                "coefficient b",
                {
                    "The intercept of the line is log b: return exp(intercept).": math.log(b),
                    "Undo the logarithm you took: log10 needs 10**intercept.": math.exp(
                        math.log10(b)
                    ),
                },
                rtol=1e-6,
            )


def _valley(sizes, bottom: float, curvature: float, floor: float, noise: float, seed: int):
    """Losses at `sizes` on a parabola in log N with its bottom at N = `bottom`, plus noise."""
    log_n = np.log(np.asarray(sizes, float))
    jitter = torch.randn(len(sizes), generator=seeded(seed), dtype=torch.float64).numpy()
    return floor + curvature * (log_n - math.log(bottom)) ** 2 + noise * jitter


@exercise(ref.isoflop_minimum)
def check_isoflop_minimum(check, isoflop_minimum):
    sizes = [25_472, 56_640, 100_096, 223_872, 396_800]
    for name, xs, ys in [
        (
            "an exact valley, its bottom between two sizes, arrays",
            np.array(sizes),
            _valley(sizes, 70_000, 0.08, 1.4, 0.0, 61),
        ),
        ("a noisy valley, lists", sizes[:4], list(_valley(sizes[:4], 60_000, 0.1, 1.5, 0.01, 62))),
        (
            "three sizes, the bottom past the largest",
            sizes[2:],
            _valley(sizes[2:], 500_000, 0.05, 1.3, 0.0, 63),
        ),
    ]:
        with check.case(name):
            n_opt, loss_opt = ref.isoflop_minimum(xs, ys)
            got_n, got_loss = _number_pair(
                check,
                check.call(isoflop_minimum, xs, ys),
                "(N, loss)",
                ("N at the bottom", "loss at the bottom"),
                (n_opt, loss_opt),
                "you returned (loss, N): return N first.",
            )
            x, y = np.asarray(xs, float), np.asarray(ys, float)
            a, b, _ = np.polyfit(np.log(x), y, 2)
            linear = np.polyfit(x, y, 2)
            lowest = int(np.argmin(y))
            _count(
                check,
                got_n,
                n_opt,
                "N at the bottom",
                {
                    "That is log N at the bottom: return exp of it.": -b / (2 * a),
                    "The vertex of a·x² + b·x + c is at x = -b / (2·a).": math.exp(-b / a),
                    "Fit the parabola to the loss against log N, not against N: on a log "
                    "axis the valley is symmetric.": -linear[1] / (2 * linear[0]),
                    "That is the lowest measured point: the bottom of the fitted parabola "
                    "falls between the sizes trained.": x[lowest],
                },
                rtol=1e-6,
            )
            _count(check, got_loss, loss_opt, "loss at the bottom", {}, rtol=1e-6)
