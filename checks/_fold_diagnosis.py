"""What chapter 4's `check_fold_transformer` says when a folded model is wrong.

A folded model is judged by what it computes (its logits against the original's), never by
its weights alone: a fold that also centres the readers' weights (TransformerLens's
`fold_ln` does) is right too. The weights only say, once the logits are wrong or a
LayerNorm kept its w or b, which mistake it was: a LayerNorm folded into some of its readers
and not others, its w folded and not its b, its b passed through the folded W, a writer
changed instead of a reader, a LayerNorm replaced by something that no longer centres.
"""

import torch
from torch import nn

from checks._compare import _close
from solutions.layernorm import LayerNorm

# Of each LayerNorm, the (weight, bias) pairs that read its output; of each block, the
# parameters that write into the stream (the other side of the next LayerNorm).
ATTENTION = [("attn.W_Q", "attn.b_Q"), ("attn.W_K", "attn.b_K"), ("attn.W_V", "attn.b_V")]
WRITERS = ["attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out"]
ROWS = "w_i scales row i of W, its d_model axis (the one that meets the LayerNorm's output)"


def readers(n_layers: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """(LayerNorm, its readers' (W, bias) names) for a Transformer of n_layers blocks."""
    groups = []
    for i in range(n_layers):
        groups.append(
            (f"blocks.{i}.ln1", [(f"blocks.{i}.{W}", f"blocks.{i}.{b}") for W, b in ATTENTION])
        )
        groups.append((f"blocks.{i}.ln2", [(f"blocks.{i}.mlp.W_in", f"blocks.{i}.mlp.b_in")]))
    return groups + [("ln_final", [("unembed.W_U", "unembed.b_U")])]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 rounding; a dtype of its own (a model turned .double()) aside."""
    if a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
        return False
    return _close(a.double(), b.double(), rtol=1e-4, atol=1e-5)


def is_constant(value: torch.Tensor, unit: float) -> bool:
    """Whether a LayerNorm parameter is all `unit` (1 for w, 0 for b), as folding leaves it."""
    return same(value, torch.full_like(value, unit))


def _status(got, original, folded, d_model_axis: int) -> str:
    """'folded' (centred over d_model or not), 'original', 'centred over its outputs' or
    'other'."""
    centred = folded - folded.mean(dim=d_model_axis, keepdim=True)
    if same(got, folded) or same(got, centred):
        return "folded"
    if same(got, folded - folded.mean(dim=-1, keepdim=True)):
        return "centred over its outputs"
    return "original" if same(got, original) else "other"


def _bias_status(got, original, ln_b, W, folded_W, folded) -> str:
    """What a reader's bias became: 'folded', 'original', or one of the usual slips."""
    slips = {
        "own bias forgotten": ln_b @ W,
        "through the folded W": ln_b @ folded_W + original,
        "original": original,
    }
    if same(got, folded):
        return "folded"
    return next((name for name, value in slips.items() if same(got, value)), "other")


def reader_statuses(got: dict, original: dict, lns: dict) -> dict[str, tuple[str, str]]:
    """For each reader W: (what its W became, what its bias became)."""
    statuses = {}
    for ln_name, pairs in readers(_layers(original)):
        w, b = lns[ln_name]
        for W_name, b_name in pairs:
            W, bias = original[W_name], original[b_name]
            folded_W, folded_b = w[:, None] * W, b @ W + bias
            statuses[W_name] = (
                _status(got[W_name], W, folded_W, d_model_axis=-2),
                _bias_status(got[b_name], bias, b, W, folded_W, folded_b),
            )
    return statuses


def _layers(params: dict) -> int:
    return 1 + max(int(name.split(".")[1]) for name in params if name.startswith("blocks."))


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def layer_norm_verdict(ln_name, w, b, pairs, statuses) -> str:
    """Why a LayerNorm of the folded model still has a w other than 1 or a b other than 0."""
    Ws = [statuses[W][0] for W, _ in pairs]
    biases = [statuses[W][1] for W, _ in pairs]
    names = ", ".join(_short(W) for W, _ in pairs)
    kept = [
        name for name, value, unit in [("w", w, 1.0), ("b", b, 0.0)] if not is_constant(value, unit)
    ]
    kept = " and ".join(kept)
    if ln_name == "ln_final" and Ws == ["original"] and biases == ["original"]:
        return (
            "forgot ln_final: fold its w and b into the unembedding's W_U and b_U too, then "
            "set its w to 1 and b to 0."
        )
    if all(s == "original" for s in Ws + biases):
        return (
            f"did not fold {ln_name} ({names} are as they were): fold its w and b into the "
            f"layers that read its output, then set w to 1 and b to 0."
        )
    if kept == "b" and all(s == "original" for s in biases):
        return (
            f"folded {ln_name}'s w but left its b in the LayerNorm: b folds too, through W into "
            f"the bias (b' = b W + bias), and the LayerNorm's b becomes 0."
        )
    return (
        f"folded {ln_name} into {names} but left its {kept} in the LayerNorm: set w to 1 and b "
        f"to 0, or they count twice."
    )


def replaced_norm(model: nn.Module, folded: nn.Module) -> str:
    """A message if a LayerNorm of `model` is something else in `folded`."""
    theirs = dict(folded.named_modules())
    for name, module in model.named_modules():
        if isinstance(module, LayerNorm) and type(theirs.get(name)) is not type(module):
            return (
                f"replaced {name} by {type(theirs.get(name)).__name__}: keep the LayerNorm, with "
                "w = 1 and b = 0. Only w and b fold; the centring and the division by σ depend "
                "on the input, so no weight can take them over."
            )
    return ""


def logits_verdict(got: dict, original: dict, statuses: dict) -> str:
    """Which mistake made the folded model's logits wrong, or "" if none is recognised."""
    n_layers = _layers(original)
    writers = [f"blocks.{i}.{p}" for i in range(n_layers) for p in WRITERS]
    writers += ["embed.W_E", "pos_embed.W_pos"]
    for name in writers:
        if not same(got[name], original[name]):
            return (
                f"changed {name}, which writes into the stream: a LayerNorm's w and b fold into "
                "the layer that reads its output, never the one that writes its input (the "
                "LayerNorm's centring and division stand between them)."
            )
    for ln_name, pairs in readers(n_layers):
        states = [statuses[W] for W, _ in pairs]
        for (W, bias), (sw, sb) in zip(pairs, states, strict=True):
            if sw == "original" and sb == "original":
                if ln_name == "ln_final":
                    return (
                        "reset ln_final without folding it into the unembedding: W_U and b_U "
                        "are as they were. Every LayerNorm folds into the layer that reads it, "
                        "the last one into W_U and b_U."
                    )
                done = [
                    _short(X)
                    for (X, _), (s, _) in zip(pairs, states, strict=True)
                    if s != "original"
                ]
                also = f" (you folded it into {', '.join(done)})" if done else ""
                return (
                    f"did not fold {ln_name} into {_short(W)} and {_short(bias)}{also}: every "
                    f"layer that reads {ln_name}'s output absorbs its w and b."
                )
            if sw == "folded" and sb == "original":
                return (
                    f"folded w but not b ({bias} is as it was): the LayerNorm's b passes through "
                    f"W into the bias, b' = b W + bias."
                )
            if sb == "own bias forgotten":
                return f"forgot the layer's own bias: {bias} must be b W + {_short(bias)}, not b W alone."
            if sb == "through the folded W":
                return (
                    f"passed b through the folded W: {bias} is b W + {_short(bias)} with W as it "
                    "was before w scaled it."
                )
            if sw == "centred over its outputs":
                return (
                    f"centred {W} over its output axis: x̂ has mean 0 over d_model, so only "
                    "that axis may be centred (or none); its other axis carries what the "
                    "layer computes."
                )
            if sw == "original":
                return f"folded b but not w into {W}: {ROWS}."
            if sw == "other":
                return f"scaled {W} otherwise than diag(w) W: {ROWS}."
    return ""
