"""Checkers for chapter 3's neurons as key-value memories (solutions/neurons.py).

Models have every parameter random (biases, LayerNorm w and b, b_U), so that a forgotten
ln_final.w, an added bias or an uncentred value changes the answer. One config is square
(d_mlp = d_model): there a row of W_in or a column of W_out has the right shape, so taking
the wrong one is a wrong value the message can name, not a shape error.
"""

import torch
import torch.nn.functional as F

from checks._configs import MLP_NOT_4X
from checks._core import exercise, plural, randomize, seeded
from checks.mlp import call_keeping_weights
from solutions import neurons as ref
from solutions.config import TINY, Config
from solutions.residual import run_with_cache
from solutions.transformer import Transformer

__all__ = ["check_neuron_logit_effect", "check_neuron_activations", "check_top_activating"]

SQUARE = Config(d_model=24, d_vocab=29, n_ctx=12, d_head=6, d_mlp=24, n_heads=4, n_layers=2)
NAMES = {TINY: "TINY", MLP_NOT_4X: "ODD", SQUARE: "SQUARE (d_mlp = d_model)"}
SCALE = 0.3  # random weights this size keep the softmax and the GELU away from saturation


def random_model(cfg: Config, seed: int) -> Transformer:
    return randomize(Transformer(cfg), seed=seed, scale=SCALE).requires_grad_(False).eval()


def _effect_mistakes(model, layer: int, neuron: int) -> dict[str, torch.Tensor]:
    """The direct effect as each usual mistake computes it."""
    mlp, ln, W_U = model.blocks[layer].mlp, model.ln_final, model.unembed.W_U
    value, key = mlp.W_out[neuron], mlp.W_in[:, neuron]

    def through(v):
        return ((v - v.mean()) * ln.w) @ W_U

    mistakes = {
        "used the neuron's key (column n of W_in): its value is row n of W_out": through(key),
        "left out ln_final.w: ln_final multiplies the stream by w before W_U reads it": (
            value - value.mean()
        )
        @ W_U,
        "did not centre the value: ln_final subtracts the mean over d_model first": (value * ln.w)
        @ W_U,
        "added b_U: the bias is the same whatever the neuron does, no part of its effect": through(
            value
        )
        + model.unembed.b_U,
        "added ln_final.b @ W_U: ln_final's b is added whatever the neuron does": through(value)
        + ln.b @ W_U,
        "applied the whole ln_final to the value, its scale included: leave the scale out "
        "(it depends on the whole stream, not on this neuron)": ln(value[None, None])[0, 0] @ W_U,
        "used neither ln_final's centring nor w": value @ W_U,
        "centred after multiplying by ln_final.w: ln_final centres the value first, then "
        "scales it by w": (value * ln.w - (value * ln.w).mean()) @ W_U,
        "divided the centred value by its standard deviation: leave ln_final's scale out "
        "(it depends on the whole stream, not on this neuron)": through(
            (value - value.mean()) / (value.var(unbiased=False) + ln.cfg.layer_norm_eps).sqrt()
        ),
    }
    if mlp.W_out.shape[0] == mlp.W_out.shape[1]:
        mistakes["took column n of W_out: the value is row n (W_out is [d_mlp, d_model])"] = (
            through(mlp.W_out[:, neuron])
        )
        mistakes["took row n of W_in: the key is column n (W_in is [d_model, d_mlp])"] = through(
            mlp.W_in[neuron]
        )
    return mistakes


@exercise(ref.neuron_logit_effect)
def check_neuron_logit_effect(check, neuron_logit_effect):
    # SQUARE first: there a row of W_in or a column of W_out is named, not a shape error.
    cases = [(SQUARE, 0, 3), (SQUARE, 1, 23), (TINY, 0, 5), (TINY, 1, 191), (MLP_NOT_4X, 2, 17)]
    for i, (cfg, layer, neuron) in enumerate(cases):
        with check.case(f"{NAMES[cfg]}, layer {layer}, neuron {neuron}"):
            model = random_model(cfg, seed=200 + i)
            expected = ref.neuron_logit_effect(model, layer, neuron)
            mistakes = _effect_mistakes(model, layer, neuron)
            got = call_keeping_weights(
                check, neuron_logit_effect, model, layer, neuron, what="neuron_logit_effect"
            )
            check.tensor(
                got,
                expected,
                what="logit effect",
                mistakes=mistakes,
                shapes=[((cfg.d_model,), "returned the value itself: multiply it by W_U")],
            )


def _activation_mistakes(model, tokens, layer: int) -> dict[str, torch.Tensor]:
    """The activations as each usual mistake records them."""
    _, cache = run_with_cache(model, tokens)
    b = f"blocks.{layer}"
    mlp = model.blocks[layer].mlp
    pre = cache[f"{b}.mlp.hook_pre"]

    def mlp_in(stream):
        return model.blocks[layer].ln2(stream) @ mlp.W_in + mlp.b_in

    mistakes = {
        "returned the pre-activations (before the GELU, hook_pre): the neurons' activations "
        "are after it (hook_post)": pre,
        "used the exact GELU: GPT-2's is the tanh approximation (F.gelu(..., "
        "approximate='tanh'))": F.gelu(pre),
        "used ReLU: GPT-2's activation is gelu_new": F.relu(pre),
        "forgot ln2: the MLP reads the stream through its LayerNorm": F.gelu(
            cache[f"{b}.hook_resid_mid"] @ mlp.W_in + mlp.b_in, approximate="tanh"
        ),
        "forgot b_in": F.gelu(cache[f"{b}.ln2.hook_normalized"] @ mlp.W_in, approximate="tanh"),
        "read the stream before the attention layer (hook_resid_pre): the MLP reads "
        "resid_mid, after attention has added its output": F.gelu(
            mlp_in(cache[f"{b}.hook_resid_pre"]), approximate="tanh"
        ),
        "returned the MLP's output (hook_mlp_out), not its neurons' activations": cache[
            f"{b}.hook_mlp_out"
        ],
    }
    for other in {layer - 1, layer + 1} & set(range(len(model.blocks))):
        mistakes[f"read layer {other}'s neurons instead of layer {layer}'s"] = cache[
            f"blocks.{other}.mlp.hook_post"
        ]
    return mistakes


@exercise(ref.neuron_activations)
def check_neuron_activations(check, neuron_activations):
    cases = [(TINY, 0, 2, 5), (TINY, 1, 1, 1), (MLP_NOT_4X, 1, 3, 7), (SQUARE, 0, 2, 12)]
    for i, (cfg, layer, batch, posn) in enumerate(cases):
        label = f"{NAMES[cfg]}, layer {layer}, batch {batch}, {plural(posn, 'position')}"
        with check.case(label):
            model = random_model(cfg, seed=300 + i)
            tokens = torch.randint(cfg.d_vocab, (batch, posn), generator=seeded(310 + i))
            expected = ref.neuron_activations(model, tokens, layer)
            mistakes = _activation_mistakes(model, tokens, layer)
            got = call_keeping_weights(
                check, neuron_activations, model, tokens, layer, what="neuron_activations"
            )
            if any(block.mlp._forward_hooks for block in model.blocks):
                check.fail(
                    "your neuron_activations left a forward hook on the model: it would run "
                    "again on every later forward pass. Keep the handle that "
                    "register_forward_hook returns and call handle.remove() (in a finally)."
                )
            if isinstance(got, torch.Tensor):
                got = got.detach()
            check.tensor(
                got,
                expected,
                what="activations",
                mistakes=mistakes,
                shapes=[((batch, posn, cfg.d_vocab), "returned the logits: return the neurons")],
                rtol=1e-4,
                atol=1e-5,
            )


def _top_mistakes(acts: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    batch, posn = acts.shape
    flat = acts.flatten()

    def pairs(i, n=posn):
        return torch.stack([i // n, i % n], dim=-1)

    top = flat.topk(k).indices
    mistakes = {
        "took the largest |activation| (abs): take the largest activations, signed": pairs(
            flat.abs().topk(k).indices
        ),
        "took the k smallest activations (argmin, or largest=False): take the largest": pairs(
            flat.topk(k, largest=False).indices
        ),
        "returned the pairs in increasing order of activation: largest first": pairs(top).flip(0),
        "returned (position, window): each row is (window, position)": pairs(top).flip(1),
        f"unravelled the flat index with the number of windows ({batch}): row-major "
        f"flattening puts window w's positions at w·posn ... w·posn + {posn - 1}, so divide by "
        f"posn = {posn}": pairs(top, batch),
    }
    if k <= posn:
        first = acts[0].topk(k).indices
        mistakes["searched the first window only: flatten across all windows"] = torch.stack(
            [torch.zeros_like(first), first], dim=-1
        )
    return mistakes


@exercise(ref.top_activating)
def check_top_activating(check, top_activating):
    cases = [(3, 7, 5), (1, 10, 4), (6, 4, 3), (4, 9, 1), (6, 3, 8)]
    for i, (batch, posn, k) in enumerate(cases):
        with check.case(f"{plural(batch, 'window')} of {posn} positions, k = {k}"):
            acts = torch.randn(batch, posn, generator=seeded(400 + i)) * 2
            expected = ref.top_activating(acts, k)
            got = check.call(top_activating, acts, k)
            shapes = [
                ((k,), "returned flat indices: unravel each into (window, position)"),
                ((2, k), "returned the pairs as columns: stack them on the last axis, (k, 2)"),
                ((batch, k), "took the top k of each window: flatten across windows first"),
            ]
            check.tensor(
                got,
                expected,
                what="(window, position) pairs",
                mistakes=_top_mistakes(acts, k),
                shapes=[(s, m) for s, m in shapes if s != (k, 2)],
                rtol=0,
                atol=0,
            )
