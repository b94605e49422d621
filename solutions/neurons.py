"""Chapter 3: neurons as key-value memories. Neuron n of an MLP reads the stream along its key,
column n of W_in, and writes its value, row n of W_out, scaled by its activation.

Works for any of the course's Transformers: `model.blocks[layer].mlp` holds W_in, b_in and
W_out, `model.ln_final` and `model.unembed` what a value meets on its way to the logits.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn


def neuron_logit_effect(model: nn.Module, layer: int, neuron: int) -> Float[Tensor, " d_vocab"]:
    """The logits the neuron's value adds by the direct path, per unit of activation.

    The value meets ln_final, with its scale left out (it depends on the whole stream and
    divides every logit alike) and without what it adds whatever the neuron does, and then
    the unembedding. Chapter 5's direct logit attribution does the same, scale included.
    """
    value = model.blocks[layer].mlp.W_out[neuron]  # row n: its value
    centred = value - value.mean()
    return (centred * model.ln_final.w) @ model.unembed.W_U


def top_tokens(
    effect: Float[Tensor, " d_vocab"], k: int
) -> tuple[Int[Tensor, " k"], Int[Tensor, " k"]]:
    """The k tokens the effect promotes most, and the k it suppresses most, strongest first."""
    return effect.topk(k).indices, (-effect).topk(k).indices


def neuron_activations(
    model: nn.Module, tokens: Int[Tensor, "batch posn"], layer: int
) -> Float[Tensor, "batch posn d_mlp"]:
    """Every neuron's activation (after the GELU, TransformerLens's hook_post) in a layer.

    A forward hook on the MLP sees its input, ln2 of the stream; the activations follow
    from it. The hook is removed even if the run fails, so that it cannot fire again.
    """
    mlp = model.blocks[layer].mlp
    seen = []
    handle = mlp.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        handle.remove()
    return F.gelu(seen[0] @ mlp.W_in + mlp.b_in, approximate="tanh")


def top_activating(acts: Float[Tensor, "batch posn"], k: int) -> Int[Tensor, "k 2"]:
    """The (window, position) of the k largest activations over all windows, largest first."""
    flat = acts.flatten().topk(k).indices
    return torch.stack([flat // acts.shape[1], flat % acts.shape[1]], dim=-1)


def context(
    windows: Int[Tensor, "batch posn"], window: int, posn: int, before: int = 20
) -> Int[Tensor, " n"]:
    """The tokens up to and including (window, posn), at most `before` of them before it."""
    return windows[window, max(0, posn - before) : posn + 1]


def text_windows(tokens: Int[Tensor, " n"], n_ctx: int) -> Int[Tensor, "batch posn"]:
    """`tokens` cut into consecutive windows of n_ctx, the remainder dropped."""
    return tokens[: len(tokens) // n_ctx * n_ctx].view(-1, n_ctx)
