"""Chapter 3's neuron checkers accept correct variants and name each usual mistake; the
neuron browser redraws when its controls change."""

import html

import einops
import pytest
import torch
import torch.nn.functional as F

from checks import neurons as checks
from solutions import neurons as ref
from solutions.mlp import gelu_new
from support import assert_accepts, assert_rejects

# --- neuron_logit_effect -------------------------------------------------------------------


def effect_with_einsum(model, layer, neuron):
    value = model.blocks[layer].mlp.W_out[neuron, :]
    value = value - value.sum() / value.numel()
    w_u = model.ln_final.w[:, None] * model.unembed.W_U  # w folded into W_U, as TransformerLens
    return einops.einsum(value, w_u, "d_model, d_model d_vocab -> d_vocab")


def effect_from_the_whole_layer(model, layer, neuron):
    W_out = model.blocks[layer].mlp.W_out
    centred = W_out - W_out.mean(-1, keepdim=True)
    return (centred * model.ln_final.w @ model.unembed.W_U)[neuron]


@pytest.mark.parametrize("learner", [effect_with_einsum, effect_from_the_whole_layer])
def test_check_neuron_logit_effect_accepts(learner, capsys):
    assert_accepts(checks.check_neuron_logit_effect, learner, capsys)


def _effect(pick, *, centre=True, w=True, extra=None):
    def effect(model, layer, neuron):
        v = pick(model.blocks[layer].mlp, neuron)
        if centre:
            v = v - v.mean()
        if w:
            v = v * model.ln_final.w
        out = v @ model.unembed.W_U
        return out + extra(model) if extra else out

    return effect


ROW = lambda mlp, n: mlp.W_out[n]  # noqa: E731
EFFECT_MISTAKES = {
    "key": (_effect(lambda mlp, n: mlp.W_in[:, n]), "key (column n of W_in)"),
    "W_out column": (_effect(lambda mlp, n: mlp.W_out[:, n % mlp.W_out.shape[1]]), "column n"),
    "W_in row": (_effect(lambda mlp, n: mlp.W_in[n % mlp.W_in.shape[0]]), "row n of W_in"),
    "no w": (_effect(ROW, w=False), "left out ln_final.w"),
    "no centring": (_effect(ROW, centre=False), "did not centre"),
    "b_U": (_effect(ROW, extra=lambda m: m.unembed.b_U), "added b_U"),
    "whole ln_final": (lambda m, i, n: m.ln_final(m.blocks[i].mlp.W_out[n][None, None])[0, 0] @ m.unembed.W_U, "scale"),
    "value only": (lambda m, i, n: m.blocks[i].mlp.W_out[n], "multiply it by W_U"),
    "w then centre": (lambda m, i, n: (m.ln_final.w * m.blocks[i].mlp.W_out[n]) @ (m.unembed.W_U - m.unembed.W_U.mean(0)), "centres the value first"),
    "normalised": (lambda m, i, n: F.layer_norm(m.blocks[i].mlp.W_out[n], (m.cfg.d_model,)) * m.ln_final.w @ m.unembed.W_U, "standard deviation"),
}  # fmt: skip


@pytest.mark.parametrize("mistake", EFFECT_MISTAKES)
def test_check_neuron_logit_effect_rejects_and_names(mistake):
    learner, diagnosis = EFFECT_MISTAKES[mistake]
    assert_rejects(checks.check_neuron_logit_effect, learner, diagnosis)


def test_check_neuron_logit_effect_rejects_centring_the_value_in_place():
    """W_out[n] is a view: `value -= value.mean()` centres row n of the model's W_out."""

    def effect(model, layer, neuron):
        value = model.blocks[layer].mlp.W_out[neuron]
        value -= value.mean()
        return (value * model.ln_final.w) @ model.unembed.W_U

    assert_rejects(checks.check_neuron_logit_effect, effect, "weights in place", "v = v - v.mean()")


# --- neuron_activations --------------------------------------------------------------------


def activations_by_hand(model, tokens, layer):
    """The forward pass written out to the layer's MLP, no hooks."""
    x = model.embed(tokens) + model.pos_embed(tokens)
    for block in model.blocks[:layer]:
        x = block(x)
    block = model.blocks[layer]
    x = x + block.attn(block.ln1(x))
    return gelu_new(block.ln2(x) @ block.mlp.W_in + block.mlp.b_in)


def activations_with_a_pre_hook(model, tokens, layer):
    mlp, seen = model.blocks[layer].mlp, {}
    handle = mlp.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    try:
        model(tokens)
    finally:
        handle.remove()
    return F.gelu(seen["x"] @ mlp.W_in + mlp.b_in, approximate="tanh")


@pytest.mark.parametrize("learner", [activations_by_hand, activations_with_a_pre_hook])
def test_check_neuron_activations_accepts(learner, capsys):
    assert_accepts(checks.check_neuron_activations, learner, capsys)


def _acts(*, layer_shift=0, act=lambda h: F.gelu(h, approximate="tanh"), bias=True, remove=True):
    def activations(model, tokens, layer):
        layer = min(max(layer + layer_shift, 0), len(model.blocks) - 1)
        mlp, seen = model.blocks[layer].mlp, {}
        handle = mlp.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
        model(tokens)
        if remove:
            handle.remove()
        return act(seen["x"] @ mlp.W_in + (mlp.b_in if bias else 0))

    return activations


def _no_ln2(model, tokens, layer):
    block, seen = model.blocks[layer], {}
    handle = block.ln2.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    model(tokens)
    handle.remove()
    return gelu_new(seen["x"] @ block.mlp.W_in + block.mlp.b_in)


def _before_attention(model, tokens, layer):
    """The block's input through ln2, as if attention had added nothing."""
    block, seen = model.blocks[layer], {}
    handle = block.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    model(tokens)
    handle.remove()
    return gelu_new(block.ln2(seen["x"]) @ block.mlp.W_in + block.mlp.b_in)


ACTIVATION_MISTAKES = {
    "pre": (_acts(act=lambda h: h), "pre-activations"),
    "exact GELU": (_acts(act=F.gelu), "exact GELU"),
    "relu": (_acts(act=F.relu), "ReLU"),
    "no b_in": (_acts(bias=False), "forgot b_in"),
    "next layer": (_acts(layer_shift=1), "read layer 1's neurons instead of layer 0's"),
    "hook left on": (_acts(remove=False), "handle.remove()"),
    "no ln2": (_no_ln2, "forgot ln2"),
    "resid_pre": (_before_attention, "hook_resid_pre"),
}


@pytest.mark.parametrize("mistake", ACTIVATION_MISTAKES)
def test_check_neuron_activations_rejects_and_names(mistake):
    learner, diagnosis = ACTIVATION_MISTAKES[mistake]
    assert_rejects(checks.check_neuron_activations, learner, diagnosis)


def test_check_neuron_activations_names_the_mlp_output():
    """Named even where its shape is wrong: it equals what the mistake computes."""

    def mlp_out(model, tokens, layer):
        seen = {}
        handle = model.blocks[layer].mlp.register_forward_hook(
            lambda m, args, out: seen.update(out=out)
        )
        model(tokens)
        handle.remove()
        return seen["out"]

    assert_rejects(checks.check_neuron_activations, mlp_out, "hook_mlp_out")


# --- top_activating ------------------------------------------------------------------------


def top_with_unravel(acts, k):
    flat = acts.reshape(-1).argsort(descending=True)[:k]
    return torch.stack(torch.unravel_index(flat, acts.shape), dim=-1)


def top_by_sorting_pairs(acts, k):
    batch, posn = acts.shape
    pairs = sorted((acts[b, p].item(), b, p) for b in range(batch) for p in range(posn))
    return torch.tensor([[b, p] for _, b, p in pairs[::-1][:k]])


@pytest.mark.parametrize("learner", [top_with_unravel, top_by_sorting_pairs])
def test_check_top_activating_accepts(learner, capsys):
    assert_accepts(checks.check_top_activating, learner, capsys)


def _pairs(i, n):
    return torch.stack([i // n, i % n], dim=-1)


TOP_MISTAKES = {
    "argmin": (lambda a, k: _pairs(a.flatten().topk(k, largest=False).indices, a.shape[1]), "smallest"),
    "increasing": (lambda a, k: ref.top_activating(a, k).flip(0), "increasing order"),
    "swapped": (lambda a, k: ref.top_activating(a, k).flip(1), "(position, window)"),
    "unravel by batch": (lambda a, k: _pairs(a.flatten().topk(k).indices, a.shape[0]), "divide by posn"),
    "first window": (lambda a, k: _pairs(a[0].topk(min(k, a.shape[1])).indices, 10**6), "first window only"),
    "flat": (lambda a, k: a.flatten().topk(k).indices, "unravel each"),
    "columns": (lambda a, k: ref.top_activating(a, k).T, "as columns"),
    "per window": (lambda a, k: a.topk(min(k, a.shape[1]), dim=-1).indices, "each window"),
    "list": (lambda a, k: ref.top_activating(a, k).tolist(), "torch.Tensor"),
    "abs": (lambda a, k: _pairs(a.flatten().abs().topk(k).indices, a.shape[1]), "|activation|"),
}  # fmt: skip


@pytest.mark.parametrize("mistake", TOP_MISTAKES)
def test_check_top_activating_rejects_and_names(mistake):
    learner, diagnosis = TOP_MISTAKES[mistake]
    assert_rejects(checks.check_top_activating, learner, diagnosis)


BROKEN = {
    "stub": (checks.check_top_activating, "not implemented yet"),
    "None": (checks.check_neuron_logit_effect, "returned None"),
    "NaN": (checks.check_neuron_activations, "NaN"),
    "exception": (checks.check_neuron_activations, "raised ZeroDivisionError"),
}
LEARNERS = {
    "stub": lambda *a: (_ for _ in ()).throw(NotImplementedError()),
    "None": lambda *a: None,
    "NaN": lambda m, t, i: ref.neuron_activations(m, t, i) * float("nan"),
    "exception": lambda *a: 1 / 0,
}


@pytest.mark.parametrize("bad", BROKEN)
def test_checks_survive_broken_code(bad):
    checker, diagnosis = BROKEN[bad]
    assert_rejects(checker, LEARNERS[bad], diagnosis)


# --- the neuron browser --------------------------------------------------------------------


def BYTES(ids):  # a decode for byte tokens, as a tokenizer's decode is called
    return bytes(ids).decode("utf-8", errors="replace")


def test_neuron_browser_redraws_when_its_controls_change():
    from course.display.neuron_browser import neuron_browser, show_context
    from solutions.config import Config
    from solutions.transformer import Transformer

    cfg = Config(d_model=16, d_vocab=256, n_ctx=8, d_head=4, d_mlp=24, n_heads=4, n_layers=2)
    model = checks.random_model(cfg, seed=0)
    windows = torch.randint(256, (5, 8), generator=torch.Generator().manual_seed(1))
    browser = neuron_browser(model, windows, BYTES, k=3)
    (layer, neuron), view = browser.children[0].children, browser.children[1]
    assert "L0N0" in view.value and view.value.count("⟦") == 3
    neuron.value = 7
    assert "L0N7" in view.value
    layer.value = 1
    assert "L1N7" in view.value
    # The top context shown is the one where layer 1's neuron 7 is largest.
    acts = ref.neuron_activations(model, windows, 1)[..., 7]
    w, p = ref.top_activating(acts, 1)[0].tolist()
    assert html.escape(show_context(BYTES, ref.context(windows, w, p))) in view.value
    assert isinstance(model, Transformer)


def test_show_context_marks_the_last_token():
    from course.display.neuron_browser import show_context, show_token

    assert show_context(BYTES, torch.tensor(list(b"a\nq"))) == "a\\n⟦q⟧"
    assert show_token(BYTES, ord(" ")) == "␣" and show_token(BYTES, ord("\n")) == "\\n"
    assert show_token(BYTES, 5) == "\\x05" and show_token(BYTES, ord("\\")) == "\\\\"


def test_the_course_models_tokens_decode_in_the_browser():
    from course.display.neuron_browser import show_context
    from course.models.course_model import load_course_model

    _, tokenizer = load_course_model()
    ids = torch.tensor(tokenizer.encode("The cat sat.\nThen"))
    assert show_context(tokenizer.decode, ids) == "The cat sat.\\n⟦Then⟧"
