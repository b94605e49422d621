"""Chapter 6's napkin math: the counts match what torch counts, and every checker rejects
broken code and says a stub is not started. Each checker's correct variants and usual slips
are tested in test_scaling_counts.py (the counts and the plan) and test_scaling_fits.py
(the measured FLOPs and the fits); the timings the chapter plots are tested here."""

import json
import math

import pytest
import torch

from checks import scaling as checks
from checks._configs import NARROW_HEADS_MLP_100
from solutions import scaling as ref
from solutions.attention import attention_flops
from solutions.config import COURSE_MODEL, GPT2_SMALL, TINY
from solutions.transformer import Transformer
from support import assert_rejects

BROKEN = [None, "124M", (1, 2), lambda *a: 1 / 0, torch.ones(3)]


# --- What the formulas claim, against what torch counts ----------------------------------


@pytest.mark.parametrize("cfg", [GPT2_SMALL, TINY, NARROW_HEADS_MLP_100, COURSE_MODEL])
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


# --- The timings the chapter plots --------------------------------------------------------


def test_bench_times_the_scaling_costs_and_stores_what_the_chapter_reads(tmp_path, monkeypatch):
    from course.bench import records
    from course.bench import scaling as bench

    stored = json.loads(records.SCALING_TIMES.read_text(encoding="utf-8"))
    monkeypatch.setattr(bench, "SCALING_TIMES", tmp_path / "times.json")
    quick = dict(lengths=[32, 64], widths=[64, 63], repeats=2)
    bench.bench_scaling(**quick)
    assert not (tmp_path / "times.json").exists(), "a plain bench run must not rewrite the record"
    result = bench.bench_scaling(**quick, record=True)
    assert json.loads((tmp_path / "times.json").read_text(encoding="utf-8")) == result
    assert result.keys() == stored.keys()
    assert len(stored["attention_s"]) == len(stored["lengths"]) >= 5
    assert len(stored["matmul_s"]) == len(stored["widths"]) >= 10
