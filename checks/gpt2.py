"""Checkers for chapter 7 (solutions/gpt2.py).

The converters are checked on HuggingFace's own GPT2LMHeadModel, built offline at small
sizes with every parameter random (LayerNorm weights and biases too, so that none can hide),
key by key, then end to end: the converted weights must give the other model's logits.
"""

import einops
import torch

from checks._compare import require_int
from checks._core import exercise, kind_of, seeded
from solutions import gpt2 as ref
from solutions.config import TINY, Config
from solutions.transformer import Transformer

__all__ = ["check_parameter_count", "check_hf_to_course", "check_course_to_hf"]

# d_model 48 split two ways, so that a head layout written the wrong way round shows.
CONFIGS = [TINY, TINY.but(n_heads=6, d_head=8, n_layers=1)]


def _counts_without(cfg: Config, tied: bool, **missing: bool) -> int:
    """parameter_count with one part left out or counted wrongly, as a learner might."""
    d, h = cfg.d_model, cfg.n_heads * cfg.d_head
    if missing.get("d_model_heads"):
        h = d
    attn = (
        4 * d * h + (0 if missing.get("qkv_biases") else 3 * h) + (0 if missing.get("b_O") else d)
    )
    mlp = 2 * d * cfg.d_mlp + (0 if missing.get("mlp_biases") else cfg.d_mlp + d)
    block = (0 if missing.get("block_norms") else 4 * d) + attn + mlp
    layers = 1 if missing.get("n_layers") else cfg.n_layers
    total = cfg.d_vocab * d + (0 if missing.get("pos") else cfg.n_ctx * d) + layers * block
    total += 0 if missing.get("ln_final") else 2 * d
    if not tied or missing.get("tied_W_U"):
        total += d * cfg.d_vocab
    if not tied or missing.get("tied_b_U"):
        total += cfg.d_vocab
    return total


COUNT_MISTAKES = {
    "qkv_biases": "left out b_Q, b_K and b_V: n_heads·d_head each, per layer",
    "b_O": "left out attention's b_O (d_model per layer)",
    "mlp_biases": "left out the MLP's biases, b_in (d_mlp) and b_out (d_model)",
    "block_norms": "left out the blocks' LayerNorms: ln1 and ln2 have a w and a b each",
    "ln_final": "left out ln_final's w and b",
    "pos": "left out W_pos (n_ctx × d_model)",
    "n_layers": "counted one block: there are n_layers of them",
    "d_model_heads": "used d_model where attention has n_heads·d_head (they differ here)",
    "tied_W_U": "still counted W_U with tied=True: tied, the unembedding is W_Eᵀ, no new matrix",
    "tied_b_U": "still counted b_U with tied=True: GPT-2 has no unembedding bias",
}


@exercise(ref.parameter_count)
def check_parameter_count(check, parameter_count):
    odd = TINY.but(n_heads=5, d_head=7, d_mlp=100, n_layers=3)
    # The odd config first: every part it has differs in size from every other.
    for cfg, name in [(odd, "n_heads·d_head ≠ d_model"), (TINY, "TINY"), (Config(), "GPT-2 small")]:
        for tied in (False, True):
            with check.case(f"{name}, tied={tied}"):
                if name == "GPT-2 small":
                    expected = ref.parameter_count(cfg, tied)
                else:
                    model = Transformer(cfg)
                    expected = sum(p.numel() for p in model.parameters())
                    if tied:
                        expected -= model.unembed.W_U.numel() + model.unembed.b_U.numel()
                got = check.call(parameter_count, cfg, tied)
                got = require_int(check, got, "parameter count")
                if got == expected:
                    continue
                if tied and got == ref.parameter_count(cfg, tied=False):
                    check.fail(
                        "with tied=True, count GPT-2's own layout: no W_U (it is W_Eᵀ) and no b_U."
                    )
                for key, mistake in COUNT_MISTAKES.items():
                    if got == _counts_without(cfg, tied, **{key: True}):
                        check.fail(
                            f"got {got:,}, expected {expected:,}: it looks like you {mistake}."
                        )
                check.fail(f"got {got:,}, expected {expected:,} (off by {got - expected:+,}).")
    with check.case("GPT-2 small, tied, is the published 124M"):
        check.equal(parameter_count(Config(), True), ref.GPT2_SMALL_PARAMETERS, what="count")


def _hf_model(cfg: Config, seed: int, tied: bool = True):
    """A GPT2LMHeadModel of cfg's shape, every parameter random (lm_head too, when untied)."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(ref.hf_config(cfg, tied=tied)).eval()
    gen = seeded(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model


def _state_dict(check, got, expected: dict, what: str, hints: dict[str, str]) -> dict:
    if not isinstance(got, dict):
        check.fail(f"return a dict of tensors ({what}'s state dict), not {kind_of(got)}.")
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    for key in missing:
        if key in hints:
            check.fail(f"the state dict has no {key!r}: {hints[key]}")
    if missing or extra:
        check.fail(
            f"the keys differ from {what}'s. Missing: {missing or 'none'}; unexpected: "
            f"{extra or 'none'}."
        )
    return got


def _attention_mistakes(W: dict[str, torch.Tensor], cfg: Config, square: bool) -> dict:
    """By Q, K, V: the tensors a wrong split of c_attn gives, in the course's [n_heads,
    d_model, d_head] layout."""
    out = {name: {} for name in "QKV"}
    for name in "QKV":
        for other in "QKV":
            if other != name:
                out[name][
                    f"split c_attn in the wrong order: its thirds are Q, K, V; this is {other}"
                ] = W[other]
        out[name][
            "laid the heads out as (d_head n_heads): each third holds head 0's d_head "
            "columns first, so the pattern is `d_model (n_heads d_head)`"
        ] = _head_relaid(W[name], cfg)
        if square:
            flat = einops.rearrange(W[name], ref.FROM_HEADS)
            out[name]["transposed c_attn: Conv1D already stores [in, out], as the course does"] = (
                einops.rearrange(flat.T, ref.TO_HEADS, n_heads=cfg.n_heads)
            )
    return out


def _head_relaid(W: torch.Tensor, cfg: Config) -> torch.Tensor:
    flat = einops.rearrange(W, ref.FROM_HEADS)
    return einops.rearrange(
        flat, "d_model (d_head n_heads) -> n_heads d_model d_head", n_heads=cfg.n_heads
    )


TRANSPOSED = "transposed a Conv1D weight: Conv1D stores [in, out], as the course does"


@exercise(ref.hf_to_course)
def check_hf_to_course(check, hf_to_course):
    # (cfg, lm_head.weight in the state dict, tied): the last is a course model converted with
    # course_to_hf, whose W_U is its own, not W_Eᵀ.
    cases = [(cfg, True, True) for cfg in CONFIGS] + [(TINY, False, True)]
    cases += [(TINY.but(n_layers=1), True, False)]
    for i, (cfg, with_lm_head, tied) in enumerate(cases):
        label = f"d_model {cfg.d_model} as {cfg.n_heads} heads of {cfg.d_head}"
        label += "" if with_lm_head else ", a tied checkpoint saved without lm_head.weight"
        label += "" if tied else ", untied: lm_head.weight is not wte.weight"
        with check.case(label):
            hf_model = _hf_model(cfg, seed=i, tied=tied)
            hf = {k: v.clone() for k, v in hf_model.state_dict().items()}
            if not with_lm_head:
                del hf["lm_head.weight"]
            expected = ref.hf_to_course(hf, cfg)
            got = check.call(hf_to_course, dict(hf), cfg)
            _state_dict(
                check,
                got,
                expected,
                "the course's Transformer",
                {
                    "unembed.b_U": "GPT-2 has no unembedding bias, but the course's Unembed has "
                    "b_U: give it zeros(d_vocab).",
                    "unembed.W_U": "W_U is lm_head.weight transposed (or wte's, when a tied "
                    "checkpoint leaves lm_head out).",
                },
            )
            W = {n: expected[f"blocks.0.attn.W_{n}"] for n in "QKV"}
            attention = _attention_mistakes(W, cfg, square=True)
            # What a learner gets who took Conv1D for nn.Linear ([out, in]) and transposed.
            conv1d = ("c_attn.weight", "c_proj.weight", "c_fc.weight")
            try:
                transposed = ref.hf_to_course(
                    {k: v.T if k.endswith(conv1d) else v for k, v in hf.items()}, cfg
                )
            except Exception:  # shapes that cannot even be split into heads
                transposed = {}
            for key, value in expected.items():
                mistakes, shapes = {}, []
                kind = key.split(".")[-1]
                if kind in ("W_Q", "W_K", "W_V") and key.startswith("blocks.0."):
                    mistakes = attention[kind[-1]]
                if kind == "W_O":
                    mistakes = {
                        "laid the heads out as (d_head n_heads) in c_proj's rows": einops.rearrange(
                            einops.rearrange(
                                value, "n_heads d_head d_model -> (d_head n_heads) d_model"
                            ),
                            "(n_heads d_head) d_model -> n_heads d_head d_model",
                            n_heads=cfg.n_heads,
                        ),
                    }
                wrong = transposed.get(key, value)
                if not torch.equal(wrong, value):
                    if wrong.shape == value.shape:
                        mistakes[TRANSPOSED] = wrong
                    else:
                        shapes.append((tuple(wrong.shape), TRANSPOSED))
                if kind == "W_U":
                    if not tied:
                        mistakes[
                            "took W_U from wte: read lm_head.weight, which an untied model keeps "
                            "apart (fall back to wte only when the checkpoint leaves it out)"
                        ] = hf["transformer.wte.weight"].T
                    shapes = [
                        (
                            tuple(value.shape[::-1]),
                            "forgot to transpose lm_head.weight: lm_head is an nn.Linear, "
                            "[d_vocab, d_model], and W_U is [d_model, d_vocab]",
                        )
                    ]
                check.tensor(got[key], value, what=key, mistakes=mistakes, shapes=shapes)
        with check.case(label + ": the converted weights give GPT2LMHeadModel's logits"):
            model = Transformer(cfg).eval()
            model.load_state_dict(got)
            tokens = torch.randint(0, cfg.d_vocab, (2, 9), generator=seeded(5))
            with torch.no_grad():
                check.tensor(model(tokens), hf_model(tokens).logits, what="logits")


@exercise(ref.course_to_hf)
def check_course_to_hf(check, course_to_hf):
    from transformers import GPT2LMHeadModel

    for i, cfg in enumerate(CONFIGS):
        label = f"d_model {cfg.d_model} as {cfg.n_heads} heads of {cfg.d_head}"
        with check.case(label):
            model = Transformer(cfg).eval()
            gen = seeded(20 + i)
            with torch.no_grad():
                for param in model.parameters():
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
                model.unembed.b_U.zero_()
            state = {k: v.clone() for k, v in model.state_dict().items()}
            expected = ref.course_to_hf(state, cfg)
            got = check.call(course_to_hf, dict(state), cfg)
            _state_dict(
                check,
                got,
                expected,
                "GPT2LMHeadModel",
                {"lm_head.weight": "the unembedding is lm_head.weight: W_U transposed."},
            )
            for key, value in expected.items():
                mistakes, shapes = {}, []
                third = value.shape[-1] // 3
                if key.endswith("c_attn.weight") or key.endswith("c_attn.bias"):
                    q, k, v = value.split(third, dim=-1)
                    mistakes = {
                        "put K first: c_attn's thirds are Q, K, V in that order": torch.cat(
                            [k, q, v], -1
                        ),
                        "put V first: c_attn's thirds are Q, K, V in that order": torch.cat(
                            [v, k, q], -1
                        ),
                        "swapped K and V: c_attn's thirds are Q, K, V in that order": torch.cat(
                            [q, v, k], -1
                        ),
                        "laid the heads out as (d_head n_heads): within each third, head 0's "
                        "d_head columns come first": torch.cat(
                            [_flat_relaid(part, cfg) for part in (q, k, v)], -1
                        ),
                    }
                    if key.endswith("weight"):
                        mistakes["transposed: Conv1D stores [in, out], as the course does"] = (
                            torch.cat([q.T, k.T, v.T], -1)
                        )
                if key.endswith("attn.c_proj.weight"):
                    mistakes = {
                        TRANSPOSED: value.T,
                        "laid the heads out as (d_head n_heads) in c_proj's rows": _flat_relaid(
                            value.T, cfg
                        ).T,
                    }
                if key.endswith("mlp.c_fc.weight") or key.endswith("mlp.c_proj.weight"):
                    shapes = [(tuple(value.shape[::-1]), TRANSPOSED)]
                if key == "lm_head.weight":
                    shapes = [
                        (
                            tuple(value.shape[::-1]),
                            "forgot to transpose W_U: lm_head is an nn.Linear, [d_vocab, d_model]",
                        )
                    ]
                check.tensor(got[key], value, what=key, mistakes=mistakes, shapes=shapes)
        with check.case(
            label + ": GPT2LMHeadModel with these weights gives the course model's logits"
        ):
            hf_model = GPT2LMHeadModel(ref.hf_config(cfg, tied=False)).eval()
            hf_model.load_state_dict(got)
            tokens = torch.randint(0, cfg.d_vocab, (2, 9), generator=seeded(6))
            with torch.no_grad():
                check.tensor(hf_model(tokens).logits, model(tokens), what="logits")
    with check.case("a nonzero b_U, which GPT-2 has nowhere to put"):
        with torch.no_grad():
            model.unembed.b_U.normal_(generator=seeded(7))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            course_to_hf(state, cfg)
        except ValueError:
            pass
        except NotImplementedError:
            raise
        except Exception as error:
            check.fail(f"raise ValueError for a nonzero b_U, not {type(error).__name__}: {error}")
        else:
            check.fail(
                "a nonzero b_U was dropped without a word: GPT2LMHeadModel has no unembedding "
                "bias, so its logits would differ. Raise ValueError when b_U is not zero."
            )


def _flat_relaid(W: torch.Tensor, cfg: Config) -> torch.Tensor:
    """W's last axis, (n_heads d_head), read as (d_head n_heads)."""
    return einops.rearrange(
        einops.rearrange(W, "... (n_heads d_head) -> ... n_heads d_head", n_heads=cfg.n_heads),
        "... n_heads d_head -> ... (d_head n_heads)",
    )
