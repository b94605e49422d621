"""The chapter 6 checkers of the napkin counts and the plan (parameters, approximate and
exact, 6·N·D, Chinchilla's split, a proposed shape, the KV cache) accept correct variants
and name the usual slips: the embedding left out or counted twice, d_mlp taken to be
4·d_model, the forward pass alone, N and D swapped, a shape off its rules or its budget."""

import math

import numpy as np
import pytest
import torch

from checks import scaling as checks
from solutions import scaling as ref
from solutions.config import GPT2_SMALL, Config
from solutions.transformer import Transformer
from support import assert_accepts, assert_rejects

# --- The checkers: reference and variants pass --------------------------------------------


def approx_with_k(cfg):
    k = cfg.d_mlp / cfg.d_model
    return cfg.d_vocab * cfg.d_model + cfg.n_layers * (4 + 2 * k) * cfg.d_model**2


def exact_by_building(cfg, tied=False):
    with torch.device("meta"):
        model = Transformer(cfg)
    n = sum(p.numel() for p in model.parameters())
    return n - (cfg.d_model + 1) * cfg.d_vocab if tied else n


def chinchilla_numpy(compute):
    n = np.sqrt(compute / 6 / 20)
    return np.float64(n), 20 * n


def propose_by_brute_force(n_params, d_vocab=50257):
    # Every allowed shape, the closest count, ties to the deeper model.
    shapes = [
        (d, layers) for d in range(128, 16385, 128) for layers in range(d // 128 or 1, d // 32 + 1)
    ]
    d, layers = min(
        shapes,
        key=lambda s: (abs(math.log((d_vocab * s[0] + 12 * s[1] * s[0] ** 2) / n_params)), -s[1]),
    )
    return GPT2_SMALL.but(d_model=d, n_layers=layers, n_heads=d // 64, d_mlp=4 * d, d_vocab=d_vocab)


def propose_by_aspect(n_params, d_vocab=50257):
    # The hint's way: d_model ≈ 64·n_layers, one layer more at a time, the closest count.
    def shaped(n_layers):
        d = 128 * max(1, round(64 * n_layers / 128))
        return Config(
            d_model=d, d_vocab=d_vocab, d_head=64, d_mlp=4 * d, n_heads=d // 64, n_layers=n_layers
        )

    return min(
        map(shaped, range(1, 200)),
        key=lambda cfg: abs(math.log(ref.approx_params(cfg) / n_params)),
    )


def kv_with_default(cfg, n_kv_heads=None, bytes_per_value=2):
    return 2 * cfg.n_layers * (n_kv_heads or cfg.n_heads) * cfg.d_head * bytes_per_value


@pytest.mark.parametrize(
    "checker, learner",
    [
        (checks.check_approx_params, ref.approx_params),
        (checks.check_approx_params, approx_with_k),
        (checks.check_exact_params, ref.exact_params),
        (checks.check_exact_params, exact_by_building),
        (checks.check_training_flops, ref.training_flops),
        (checks.check_training_flops, lambda n, d: 6.0 * n * d),
        (checks.check_chinchilla_optimal, ref.chinchilla_optimal),
        (checks.check_chinchilla_optimal, chinchilla_numpy),
        (checks.check_propose_config, ref.propose_config),
        (checks.check_propose_config, propose_by_brute_force),
        (checks.check_propose_config, propose_by_aspect),
        (checks.check_kv_bytes_per_token, ref.kv_bytes_per_token),
        (checks.check_kv_bytes_per_token, kv_with_default),
    ],
    ids=lambda v: getattr(v, "__name__", "lambda"),
)
def test_checker_accepts(checker, learner, capsys):
    assert_accepts(checker, learner, capsys)


# --- The checkers name the usual slips ----------------------------------------------------


def d_mlp_k4(cfg):
    return cfg.d_vocab * cfg.d_model + cfg.n_layers * 12 * cfg.d_model**2


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda c: c.n_layers * (4 * c.d_model**2 + 2 * c.d_model * c.d_mlp), "Add V·d"),
        (lambda c: ref.approx_params(c) + c.d_vocab * c.d_model, "Count the embedding once"),
        (d_mlp_k4, "not always 4"),
        (lambda c: c.d_vocab * c.d_model + 4 * c.d_model**2 + 2 * c.d_model * c.d_mlp, "n_layers"),
        (lambda c: c.d_vocab * c.d_model + c.n_layers * 3 * c.d_model**2, "parameter count is"),
    ],
    ids=["no-embedding", "untied", "k=4", "one-layer", "wrong"],
)
def test_check_approx_params_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_approx_params, learner, fragment)


def exact_with(skip=(), tied_bias=False):
    def exact(cfg, tied=False):
        d, heads, V, L = cfg.d_model, cfg.n_heads * cfg.d_head, cfg.d_vocab, cfg.n_layers
        if "heads" in skip:
            heads = d
        biases = "biases" not in skip
        ln = 0 if "ln" in skip else 4 * d
        attn = 4 * d * heads + biases * (3 * heads + d)
        mlp = 2 * d * cfg.d_mlp + biases * (cfg.d_mlp + d)
        total = V * d + ("pos" not in skip) * cfg.n_ctx * d + L * (attn + mlp + ln)
        total += 0 if ("ln" in skip or "ln_final" in skip) else 2 * d
        if not tied:
            total += d * V + biases * V
        elif tied_bias:
            total += V
        return total

    return exact


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (exact_with(skip={"biases"}), "Count the biases"),
        (exact_with(skip={"ln"}), "Count the LayerNorms"),
        (exact_with(skip={"ln_final"}), "final LayerNorm"),
        (exact_with(skip={"pos"}), "W_pos"),
        (exact_with(tied_bias=True), "no b_U"),
        (exact_with(skip={"heads"}), "not always"),
        (lambda cfg, tied=False: ref.exact_params(cfg), "count neither W_U nor b_U"),
        (lambda cfg, tied=True: ref.exact_params(cfg, tied), "tied defaults to False"),
    ],
    ids=[
        "biases",
        "layernorms",
        "ln_final",
        "positions",
        "tied-bias",
        "d_model-heads",
        "tied-W_U",
        "default",
    ],
)
def test_check_exact_params_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_exact_params, learner, fragment)


@pytest.mark.parametrize(
    "learner, fragment",
    [(lambda n, d: 2 * n * d, "forward pass alone"), (lambda n, d: 3 * n * d, "multiply-add")],
)
def test_check_training_flops_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_training_flops, learner, fragment)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda c: (20 * math.sqrt(c / 120), math.sqrt(c / 120)), "parameters first"),
        (lambda c: (math.sqrt(c / 6), math.sqrt(c / 6)), "N = sqrt(C / 120)"),
        (lambda c: (c / 120, 20 * c / 120), "square root"),
        (lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)), "not 20·N²"),
        (lambda c: (math.sqrt(c / 120), math.sqrt(c / 120) / 20), "not N / 20"),
        (lambda c: math.sqrt(c / 120), "return a pair"),
    ],
    ids=["swapped", "D=N", "no-sqrt", "no-6", "N/20", "one-number"],
)
def test_check_chinchilla_optimal_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_chinchilla_optimal, learner, fragment)


def shaped(d, layers, **changes):
    return lambda n, v=50257: GPT2_SMALL.but(
        d_model=d, n_layers=layers, n_heads=d // 64, d_mlp=4 * d, d_vocab=v
    ).but(**changes)


def blocks_only(n_params, d_vocab=50257):
    # Spends the whole budget on the blocks, 12·L·d² with d = 64·L: forgets the embedding.
    layers = round((n_params / 12 / 64**2) ** (1 / 3))
    return shaped(64 * layers + (64 * layers) % 128, layers)(n_params, d_vocab)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda n, v=50257: ref.propose_config(n), "keep the"),
        (shaped(768, 12, d_head=96, n_heads=8), "64 wide"),
        (shaped(800, 12, n_heads=12, d_head=64), "multiple of 128"),
        (shaped(768, 12, n_heads=6), "n_heads · d_head"),
        (shaped(768, 12, d_mlp=3000), "4·d_model"),
        (shaped(3072, 1), "deeper and narrower"),
        (shaped(256, 40), "wider and shallower"),
        (shaped(768, 12), "off the budget"),
        (blocks_only, "embedding V·d counts too"),
        (lambda n, v=50257: {"d_model": 768}, "return a Config"),
        (lambda n, v=50257: ref.propose_config(n).but(d_vocab=v), "not 50,257"),
    ],
    ids=[
        "vocab",
        "d_head",
        "not-128",
        "heads",
        "d_mlp",
        "too-wide",
        "too-deep",
        "budget",
        "no-emb",
        "dict",
        "planned-for-50257",
    ],
)
def test_check_propose_config_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_propose_config, learner, fragment)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda c, kv=None, b=2: c.n_layers * (kv or c.n_heads) * c.d_head * b, "both a key"),
        (lambda c, kv=None, b=2: 2 * c.n_layers * c.n_heads * c.d_head * b, "use n_kv_heads"),
        (lambda c, kv=None, b=2: 2 * (kv or c.n_heads) * c.d_head * b, "n_layers"),
        (lambda c, kv=None, b=2: 2 * c.n_layers * (kv or c.n_heads) * c.d_head, "bytes_per_value"),
        (lambda c, kv=None, b=2: 2 * c.n_layers * (kv or c.n_heads) * c.d_model * b, "not d_model"),
        (lambda c, kv=None, b=4: ref.kv_bytes_per_token(c, kv, b), "bytes for GPT-2 small"),
        (
            lambda c, kv=None, b=2: (
                2 * c.n_layers * (kv or c.n_heads) * (c.d_model // c.n_heads) * b
            ),
            "not always d_model / n_heads",
        ),
    ],
    ids=["keys-only", "n_heads", "one-layer", "no-bytes", "d_model", "default-4", "d_head-derived"],
)
def test_check_kv_bytes_per_token_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_kv_bytes_per_token, learner, fragment)
