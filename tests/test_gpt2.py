"""Chapter 7: the course's Transformer is GPT-2 (equal logits to HuggingFace's on the same
random weights, both ways), the converters' checkers name each usual mistake, and the real
weights load only from this machine, with a clear message when they are absent."""

import einops
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from checks import gpt2 as checks
from solutions import gpt2
from solutions.config import TINY, Config
from solutions.gpt2 import course_to_hf, hf_to_course, parameter_count
from solutions.transformer import Transformer
from support import assert_accepts, assert_rejects


def randomized(model: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Every parameter moved off its initial value (LayerNorm w and biases too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="module")
def gpt2_small():
    """HuggingFace's GPT-2 small with random weights, and the course's model holding them."""
    torch.manual_seed(0)
    hf_model = randomized(GPT2LMHeadModel(GPT2Config()).eval(), seed=1)
    return hf_model, gpt2.from_huggingface(hf_model)


def test_gpt2_small_has_the_published_size_and_the_course_layout_more(gpt2_small):
    hf_model, model = gpt2_small
    assert sum(p.numel() for p in hf_model.parameters()) == gpt2.GPT2_SMALL_PARAMETERS
    assert sum(p.numel() for p in model.parameters()) == parameter_count(Config())
    cfg = Config()
    assert parameter_count(cfg) - parameter_count(cfg, tied=True) == cfg.d_vocab * (cfg.d_model + 1)


def test_course_gpt2_small_equals_huggingface_on_the_same_random_weights(gpt2_small):
    hf_model, model = gpt2_small
    tokens = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = model(tokens), hf_model(tokens).logits
    assert (ours - theirs).abs().max() < 1e-4
    assert theirs.std() > 0.1  # the weights are far from an init that hides anything


def test_course_model_runs_inside_gpt2_lm_head_model(gpt2_small):
    _, model = gpt2_small
    untied = randomized(Transformer(TINY).eval(), seed=3, std=0.3)
    with torch.no_grad():
        untied.unembed.b_U.zero_()  # GPT-2 has none
    for course_model in (model, untied):
        hf_model = gpt2.to_huggingface(course_model)
        tokens = torch.randint(0, course_model.cfg.d_vocab, (2, 10))
        with torch.no_grad():
            diff = (hf_model(tokens).logits - course_model(tokens)).abs().max()
        assert diff < 1e-4
    assert hf_model.lm_head.weight is not hf_model.transformer.wte.weight  # untied


def test_round_trip_is_the_identity():
    model = randomized(Transformer(TINY), seed=4, std=0.3)
    with torch.no_grad():
        model.unembed.b_U.zero_()
    state = model.state_dict()
    back = hf_to_course(course_to_hf(state, TINY), TINY)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


# --- Checkers ----------------------------------------------------------------------------


def test_checkers_accept_the_reference(capsys):
    assert_accepts(checks.check_parameter_count, parameter_count, capsys)
    assert_accepts(checks.check_hf_to_course, hf_to_course, capsys)
    assert_accepts(checks.check_course_to_hf, course_to_hf, capsys)


def test_check_parameter_count_accepts_counting_a_built_model(capsys):
    def parameter_count(cfg, tied=False):
        model = Transformer(cfg.but(n_ctx=cfg.n_ctx))
        n = sum(p.numel() for p in model.parameters())
        return n - (cfg.d_model * cfg.d_vocab + cfg.d_vocab if tied else 0)

    assert_accepts(checks.check_parameter_count, parameter_count, capsys)


def count_with(**missing):
    return lambda cfg, tied=False: checks._counts_without(cfg, tied, **missing)


@pytest.mark.parametrize(
    "missing, diagnosis",
    [
        ("qkv_biases", "b_Q, b_K and b_V"),
        ("b_O", "b_O"),
        ("mlp_biases", "b_in"),
        ("block_norms", "ln1 and ln2"),
        ("ln_final", "ln_final"),
        ("pos", "W_pos"),
        ("n_layers", "n_layers"),
        ("d_model_heads", "n_heads·d_head"),
        ("tied_W_U", "W_Eᵀ"),
        ("tied_b_U", "no unembedding bias"),
    ],
)
def test_check_parameter_count_names_each_part_left_out(missing, diagnosis):
    assert_rejects(checks.check_parameter_count, count_with(**{missing: True}), diagnosis)


def test_check_parameter_count_rejects_ignoring_tied():
    assert_rejects(
        checks.check_parameter_count,
        lambda cfg, tied=False: parameter_count(cfg),
        "tied=True",
        "no W_U",
    )


def test_check_parameter_count_rejects_a_float_and_the_stub():
    assert_rejects(
        checks.check_parameter_count, lambda cfg, tied=False: 1.0, "should be an int", "use //"
    )

    def stub(cfg, tied=False):
        raise NotImplementedError

    assert_rejects(checks.check_parameter_count, stub, "not implemented yet")


def patched(convert, key_part: str, change):
    """A converter whose outputs under keys containing key_part are changed by `change`."""

    def learner(state, cfg):
        out = convert(state, cfg)
        return {k: change(v, cfg) if key_part in k else v for k, v in out.items()}

    return learner


def to_heads_as(pattern):
    """hf_to_course with the c_attn thirds rearranged by `pattern`, as a learner writes it."""

    def learner(hf, cfg):
        out = hf_to_course(hf, cfg)
        for layer in range(cfg.n_layers):
            thirds = hf[f"transformer.h.{layer}.attn.c_attn.weight"].chunk(3, dim=-1)
            for name, W in zip("QKV", thirds, strict=True):
                out[f"blocks.{layer}.attn.W_{name}"] = einops.rearrange(
                    W, pattern, n_heads=cfg.n_heads
                )
        return out

    return learner


def hf_to_course_transposing_conv1d(hf, cfg):
    """A learner who took Conv1D for nn.Linear ([out, in]) and transposed its weights."""
    hf = {k: v.T if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else v
          for k, v in hf.items()}  # fmt: skip
    return hf_to_course(hf, cfg)


def hf_to_course_split_kqv(hf, cfg):
    hf = dict(hf)
    for key in [k for k in hf if "c_attn" in k]:
        q, k, v = hf[key].chunk(3, dim=-1)
        hf[key] = torch.cat([k, q, v], dim=-1)
    return hf_to_course(hf, cfg)


def hf_to_course_without_b_U(hf, cfg):
    out = hf_to_course(hf, cfg)
    del out["unembed.b_U"]
    return out


def hf_to_course_ignoring_missing_lm_head(hf, cfg):
    out = hf_to_course(hf, cfg)
    out["unembed.W_U"] = hf["lm_head.weight"].T  # KeyError on a tied checkpoint
    return out


def hf_to_course_always_from_wte(hf, cfg):
    # Right for GPT-2 itself (tied), wrong for a course model converted with its own W_U.
    out = hf_to_course(hf, cfg)
    out["unembed.W_U"] = hf["transformer.wte.weight"].T
    return out


@pytest.mark.parametrize(
    "learner, diagnosis",
    [
        (hf_to_course_transposing_conv1d, "Conv1D stores [in, out]"),
        (hf_to_course_split_kqv, "split c_attn in the wrong order"),
        (to_heads_as("d_model (d_head n_heads) -> n_heads d_model d_head"), "(d_head n_heads)"),
        (patched(hf_to_course, "W_U", lambda W, cfg: W.T), "forgot to transpose lm_head"),
        (hf_to_course_without_b_U, "zeros(d_vocab)"),
        (hf_to_course_ignoring_missing_lm_head, "KeyError"),
        (patched(hf_to_course, "W_in", lambda W, cfg: W.T), "Conv1D stores [in, out]"),
        (patched(hf_to_course, "ln_final.b", lambda b, cfg: b * 0), "wrong values"),
        (hf_to_course_always_from_wte, "took W_U from wte"),
    ],
    ids=[
        "conv1d-transposed",
        "kqv",
        "head-layout",
        "lm-head",
        "no-b_U",
        "tied",
        "W_in",
        "ln_f",
        "wte-for-untied",
    ],
)
def test_check_hf_to_course_rejects_and_names(learner, diagnosis):
    assert_rejects(checks.check_hf_to_course, learner, diagnosis)


def course_to_hf_with(pattern=None, order="QKV", transpose=False):
    def learner(state, cfg):
        out = course_to_hf(state, cfg)
        for layer in range(cfg.n_layers):
            b = f"blocks.{layer}.attn."
            flat = [
                einops.rearrange(state[b + f"W_{n}"], pattern or gpt2.FROM_HEADS) for n in order
            ]
            W = torch.cat(flat, dim=-1)
            out[f"transformer.h.{layer}.attn.c_attn.weight"] = W.T if transpose else W
        return out

    return learner


def course_to_hf_dropping_b_U(state, cfg):
    state = dict(state)
    state["unembed.b_U"] = torch.zeros_like(state["unembed.b_U"])
    return course_to_hf(state, cfg)


@pytest.mark.parametrize(
    "learner, diagnosis",
    [
        (course_to_hf_with(order="KQV"), "put K first"),
        (course_to_hf_with(order="QVK"), "swapped K and V"),
        (
            course_to_hf_with("n_heads d_model d_head -> d_model (d_head n_heads)"),
            "(d_head n_heads)",
        ),
        (patched(course_to_hf, "attn.c_proj.weight", lambda W, cfg: W.T), "Conv1D stores"),
        (patched(course_to_hf, "c_fc.weight", lambda W, cfg: W.T), "Conv1D stores"),
        (patched(course_to_hf, "lm_head", lambda W, cfg: W.T), "forgot to transpose W_U"),
        (course_to_hf_dropping_b_U, "Raise ValueError"),
    ],
    ids=["kqv", "qvk", "head-layout", "c_proj", "c_fc", "lm-head", "b_U-dropped"],
)
def test_check_course_to_hf_rejects_and_names(learner, diagnosis):
    assert_rejects(checks.check_course_to_hf, learner, diagnosis)


def test_check_course_to_hf_rejects_a_missing_lm_head():
    def learner(state, cfg):
        out = course_to_hf(state, cfg)
        del out["lm_head.weight"]
        return out

    assert_rejects(checks.check_course_to_hf, learner, "lm_head.weight: W_U transposed")


# --- Loading the real weights ------------------------------------------------------------


def test_load_gpt2_reads_a_saved_checkpoint_and_never_downloads(tmp_path, monkeypatch):
    cfg = TINY
    hf_model = randomized(GPT2LMHeadModel(gpt2.hf_config(cfg)).eval(), seed=5, std=0.3)
    hf_model.save_pretrained(tmp_path / "gpt2")
    tokens = torch.randint(0, cfg.d_vocab, (1, 8))
    with torch.no_grad():
        expected = hf_model(tokens).logits
    for fused in (False, True):
        model = gpt2.load_gpt2(tmp_path / "gpt2", fused=fused)
        assert model.cfg == cfg and not model.training
        with torch.no_grad():
            assert (model(tokens) - expected).abs().max() < 1e-4
    monkeypatch.setenv(gpt2.GPT2_ENV, str(tmp_path / "gpt2"))
    assert gpt2.load_gpt2().cfg == cfg


def test_load_gpt2_says_where_it_looked_when_the_weights_are_absent(tmp_path, monkeypatch):
    # A name no cache holds, so that the test means the same where GPT-2 is cached.
    monkeypatch.setattr(gpt2, "HUB_NAMES", ("residual-stream/no-such-model",))
    monkeypatch.setenv(gpt2.GPT2_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError) as absent:
        gpt2.load_gpt2()
    message = str(absent.value)
    assert "not on this machine" in message and "never downloads" in message
    assert "nothing-here" in message and gpt2.GPT2_ENV in message
    assert "residual-stream/no-such-model" in message
