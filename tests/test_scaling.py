"""Chapter 6's napkin math: the counts match what torch counts, and each checker accepts
correct variants and names the usual slips."""

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from checks import scaling as checks
from course.config import COURSE_MODEL, GPT2_SMALL, TINY, Config
from solutions import scaling as ref
from solutions.attention import attention_flops
from solutions.transformer import Transformer
from support import assert_accepts, assert_rejects

BROKEN = [None, "124M", (1, 2), lambda *a: 1 / 0, torch.ones(3)]


# --- What the formulas claim, against what torch counts ----------------------------------


@pytest.mark.parametrize("cfg", [GPT2_SMALL, TINY, checks.ODD, COURSE_MODEL])
def test_exact_params_counts_the_course_transformer(cfg):
    with torch.device("meta"):
        model = Transformer(cfg)
    assert ref.exact_params(cfg) == sum(p.numel() for p in model.parameters())


def test_gpt2_small_counts():
    assert ref.exact_params(GPT2_SMALL, tied=True) == 124_439_808
    assert ref.exact_params(GPT2_SMALL) == 163_087_441
    assert ref.approx_params(GPT2_SMALL) == 123_532_032


def test_tied_count_is_huggingface_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_embd=COURSE_MODEL.d_model,
        n_layer=COURSE_MODEL.n_layers,
        n_head=COURSE_MODEL.n_heads,
        n_positions=COURSE_MODEL.n_ctx,
        vocab_size=COURSE_MODEL.d_vocab,
    )
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    assert ref.exact_params(COURSE_MODEL, tied=True) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cfg, batch", [(TINY, 3), (GPT2_SMALL, 1), (COURSE_MODEL, 2)])
def test_counted_training_flops_are_6_n_d_plus_attention(cfg, batch):
    # approx_params counts exactly the weights that a token meets in a matmul (W_U for the
    # embedding's V·d); attention's two products come on top, three times for the backward.
    with torch.device("meta"):
        model = Transformer(cfg)
    tokens = torch.zeros(batch, cfg.n_ctx, dtype=torch.long, device="meta")
    counted = ref.count_training_flops(model, tokens)
    predicted = ref.training_flops(ref.approx_params(cfg), tokens.numel())
    assert counted == predicted + 3 * batch * attention_flops(cfg, cfg.n_ctx)


def test_llama3_8b_sized_kv_cache():
    assert ref.kv_bytes_per_token(ref.LLAMA3_8B, ref.LLAMA3_8B_KV_HEADS) == 128 * 1024
    assert ref.kv_bytes_per_token(ref.LLAMA3_8B) == 512 * 1024
    assert ref.kv_bytes_per_token(GPT2_SMALL) == 36 * 1024


def test_chinchilla_used_its_budget_compute_optimally():
    n, d = ref.chinchilla_optimal(5.76e23)
    assert round(n / 1e9) == 69 and round(d / 1e12, 1) == 1.4
    assert math.isclose(ref.training_flops(n, d), 5.76e23)


@pytest.mark.parametrize("n_params, d_vocab", checks.BUDGETS + [(7e10, 32000), (1e12, 50257)])
def test_propose_config_meets_its_rules(n_params, d_vocab):
    cfg = ref.propose_config(n_params, d_vocab)
    assert cfg.d_model % 128 == 0 and cfg.n_heads * 64 == cfg.d_model == cfg.d_mlp // 4
    assert 32 <= cfg.d_model / cfg.n_layers <= 128
    assert abs(ref.approx_params(cfg) / n_params - 1) < 0.03


def test_propose_config_gives_gpt2_small_for_its_budget():
    cfg = ref.propose_config(124e6)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads) == (768, 12, 12)


def test_fit_power_law_recovers_a_power_law():
    a, b = ref.fit_power_law([1, 10, 100], [5, 500, 50000])
    assert math.isclose(a, 2) and math.isclose(b, 5)


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


def count_with_sum_loss(model, tokens):
    counter = FlopCounterMode(display=False)
    with counter:
        model(tokens).sum().backward()
    return int(counter.get_total_flops())


def fit_with_torch(x, y):
    lx, ly = torch.tensor(x, dtype=torch.float64).log(), torch.tensor(y, dtype=torch.float64).log()
    a = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    return a, torch.exp(ly.mean() - a * lx.mean())


def fit_with_log10(x, y):
    a, c = np.polyfit(np.log10(x), np.log10(y), 1)
    return a, 10**c


def bottom_with_polynomial(n, losses):
    # numpy's Polynomial class, in log10 N, and the bottom found by its derivative's root.
    p = np.polynomial.Polynomial.fit(np.log10(n), losses, 2)
    x = p.deriv().roots()[0]
    return 10**x, p(x)


def bottom_with_torch(n, losses):
    # Least squares by hand: the design matrix [1, x, x²] and torch's lstsq.
    x = torch.tensor(n, dtype=torch.float64).log()
    design = torch.stack([torch.ones_like(x), x, x**2], dim=1)
    c, b, a = torch.linalg.lstsq(
        design, torch.tensor(losses, dtype=torch.float64)[:, None]
    ).solution[:, 0]
    x0 = -b / (2 * a)
    return x0.exp(), c + b * x0 + a * x0**2


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
        (checks.check_count_training_flops, ref.count_training_flops),
        (checks.check_count_training_flops, count_with_sum_loss),
        (checks.check_fit_power_law, ref.fit_power_law),
        (checks.check_fit_power_law, fit_with_torch),
        (checks.check_fit_power_law, fit_with_log10),
        (checks.check_isoflop_minimum, ref.isoflop_minimum),
        (checks.check_isoflop_minimum, bottom_with_polynomial),
        (checks.check_isoflop_minimum, bottom_with_torch),
    ],
    ids=lambda v: getattr(v, "__name__", "lambda"),
)
def test_checker_accepts(checker, learner, capsys):
    assert_accepts(checker, learner, capsys)


# --- The checkers: broken code is rejected, never crashes the checker ---------------------

CHECKERS = [getattr(checks, name) for name in checks.__all__]


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("broken", BROKEN, ids=["None", "str", "tuple", "raises", "tensor"])
def test_checker_rejects_broken_code(checker, broken):
    learner = broken if callable(broken) else (lambda *a, _b=broken: _b)
    assert_rejects(checker, learner)


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_checker_says_a_stub_is_not_started(checker):
    def stub(*args):
        raise NotImplementedError()

    assert_rejects(checker, stub, "not implemented yet")


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


def count_forward_only(model, tokens):
    with FlopCounterMode(display=False) as counter:
        loss = model(tokens).sum()
    loss.backward()
    return counter.get_total_flops()


def count_returning_the_counter(model, tokens):
    with FlopCounterMode(display=False) as counter:
        model(tokens).sum().backward()
    return counter


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (count_forward_only, "inside the `with FlopCounterMode"),
        (count_returning_the_counter, "should be a number"),
    ],
)
def test_check_count_training_flops_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_count_training_flops, learner, fragment)


def coefficient_from_mean_ratio(x, y):
    # The arithmetic mean of y / x^a is not the least-squares intercept's exp (a geometric mean).
    a = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0]
    return a, float(np.mean(np.asarray(y, float) / np.asarray(x, float) ** a))


def fit_in_linear_space(x, y):
    a, c = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return a, c


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda x, y: ref.fit_power_law(x, y)[::-1], "return the exponent first"),
        (lambda x, y: (ref.fit_power_law(x, y)[0], math.log(ref.fit_power_law(x, y)[1])), "exp("),
        (
            lambda x, y: (
                np.polyfit(np.log10(x), np.log10(y), 1)[0],
                math.exp(np.polyfit(np.log10(x), np.log10(y), 1)[1]),
            ),
            "10**intercept",
        ),
        (fit_in_linear_space, "log y against log x"),
        (coefficient_from_mean_ratio, "the coefficient b is"),
    ],
    ids=["swapped", "log-b", "log10-exp", "linear", "mean-ratio-b"],
)
def test_check_fit_power_law_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_fit_power_law, learner, fragment)


def bottom_in_log(n, losses):
    a, b, c = np.polyfit(np.log(n), losses, 2)
    return -b / (2 * a), np.polyval([a, b, c], -b / (2 * a))


def bottom_without_the_2(n, losses):
    a, b, c = np.polyfit(np.log(n), losses, 2)
    return math.exp(-b / a), np.polyval([a, b, c], -b / a)


def bottom_in_linear_n(n, losses):
    a, b, c = np.polyfit(np.asarray(n, float), losses, 2)
    return -b / (2 * a), np.polyval([a, b, c], -b / (2 * a))


def lowest_point(n, losses):
    i = int(np.argmin(losses))
    return n[i], losses[i]


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (bottom_in_log, "exp of it"),
        (bottom_without_the_2, "-b / (2·a)"),
        (bottom_in_linear_n, "against log N"),
        (lowest_point, "lowest measured point"),
        (lambda n, losses: ref.isoflop_minimum(n, losses)[::-1], "return N first"),
    ],
    ids=["log-n", "no-2", "linear-n", "lowest-point", "swapped"],
)
def test_check_isoflop_minimum_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_isoflop_minimum, learner, fragment)


def test_isoflop_minimum_finds_a_parabola_s_bottom():
    n = [1e4, 1e5, 1e6]
    losses = [2 + 0.1 * (math.log(x) - math.log(3e5)) ** 2 for x in n]
    bottom, loss = ref.isoflop_minimum(n, losses)
    assert math.isclose(bottom, 3e5) and math.isclose(loss, 2)


# --- The timings the chapter plots --------------------------------------------------------


def test_bench_times_the_scaling_costs_and_stores_what_the_chapter_reads(tmp_path, monkeypatch):
    from course import bench

    stored = json.loads(bench.SCALING_TIMES.read_text(encoding="utf-8"))
    monkeypatch.setattr(bench, "SCALING_TIMES", tmp_path / "times.json")
    quick = dict(lengths=[32, 64], widths=[64, 63], repeats=2)
    bench.bench_scaling(**quick)
    assert not (tmp_path / "times.json").exists(), "a plain bench run must not rewrite the record"
    result = bench.bench_scaling(**quick, record=True)
    assert json.loads((tmp_path / "times.json").read_text(encoding="utf-8")) == result
    assert result.keys() == stored.keys()
    assert len(stored["attention_s"]) == len(stored["lengths"]) >= 5
    assert len(stored["matmul_s"]) == len(stored["widths"]) >= 10
