"""Chapter 5: the residual stream, taken apart.

The forward pass written out once more, with every intermediate activation passed through a
hook under its TransformerLens name (`run_with_hooks`): recorded, that is a cache; replaced,
that is a patch; both in one run, the cache of a patched run (`run_with_cache`;
`run_with_patch` for the logits of one patch). From the cache, the final stream as a sum of
parts, one per head, per MLP, per embedding (`decompose_resid`), and what each part adds to
a prediction (`logit_lens`, `direct_logit_attribution`). And the causal test that
attribution cannot give: activation patching, one layer and one position at a time
(`patch_sweep`).

Works for any model with the course's names (embed, pos_embed, blocks, ln_final, unembed;
ln1, attn, ln2, mlp), attention-only ones included: a block whose `mlp` is missing or None
has no ln2, no MLP, and no resid_mid, as in TransformerLens.
"""

from collections.abc import Callable

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from solutions.attention import apply_causal_mask, attention_scores, to_heads
from solutions.config import Config

# A hook sees each activation by name and returns what the run goes on with.
Hook = Callable[[str, Tensor], Tensor]


def layer_norm_with_hooks(
    ln: nn.Module, residual: Float[Tensor, "batch posn d_model"], name: str, hook: Hook
) -> Float[Tensor, "batch posn d_model"]:
    """ln(residual), computed from ln's w and b, through `{name}.hook_scale` ([batch, posn, 1])
    and `{name}.hook_normalized` (after w and b, as TransformerLens records it). A model
    without LayerNorm (ln an nn.Identity) reads the stream as it is, and records nothing."""
    if isinstance(ln, nn.Identity):
        return residual
    centred = residual - residual.mean(dim=-1, keepdim=True)
    scale = (centred.pow(2).mean(dim=-1, keepdim=True) + ln.cfg.layer_norm_eps).sqrt()
    scale = hook(f"{name}.hook_scale", scale)
    return hook(f"{name}.hook_normalized", centred / scale * ln.w + ln.b)


def attention_with_hooks(
    attn: nn.Module, normalized: Float[Tensor, "batch posn d_model"], name: str, hook: Hook
) -> Float[Tensor, "batch posn d_model"]:
    """attn(normalized), through hook_q, hook_k, hook_v, hook_attn_scores (scaled, then
    masked with -inf), hook_pattern and hook_z, each under `{name}.`."""
    q = hook(f"{name}.hook_q", to_heads(normalized, attn.W_Q, attn.b_Q))
    k = hook(f"{name}.hook_k", to_heads(normalized, attn.W_K, attn.b_K))
    v = hook(f"{name}.hook_v", to_heads(normalized, attn.W_V, attn.b_V))
    scores = hook(f"{name}.hook_attn_scores", apply_causal_mask(attention_scores(q, k)))
    pattern = hook(f"{name}.hook_pattern", scores.softmax(dim=-1))
    z = einops.einsum(
        pattern,
        v,
        "batch n_heads query_posn key_posn, batch key_posn n_heads d_head "
        "-> batch query_posn n_heads d_head",
    )
    z = hook(f"{name}.hook_z", z)
    out = einops.einsum(
        z, attn.W_O, "batch posn n_heads d_head, n_heads d_head d_model -> batch posn d_model"
    )
    return out + attn.b_O


def mlp_with_hooks(
    mlp: nn.Module, normalized: Float[Tensor, "batch posn d_model"], name: str, hook: Hook
) -> Float[Tensor, "batch posn d_model"]:
    """mlp(normalized), through `{name}.hook_pre` and `{name}.hook_post` ([batch, posn, d_mlp])."""
    pre = hook(f"{name}.hook_pre", normalized @ mlp.W_in + mlp.b_in)
    post = hook(f"{name}.hook_post", F.gelu(pre, approximate="tanh"))
    return post @ mlp.W_out + mlp.b_out


def run_with_hooks(
    model: nn.Module, tokens: Int[Tensor, "batch posn"], hook: Hook
) -> Float[Tensor, "batch posn d_vocab"]:
    """The model's forward pass, each activation passed through `hook(name, activation)`
    under its TransformerLens name, the run going on with what the hook returns."""
    embed = hook("hook_embed", model.embed(tokens))
    residual = embed + hook("hook_pos_embed", model.pos_embed(tokens))
    for i, block in enumerate(model.blocks):
        b = f"blocks.{i}"
        resid_pre = hook(f"{b}.hook_resid_pre", residual)
        normalized = layer_norm_with_hooks(block.ln1, resid_pre, f"{b}.ln1", hook)
        attn_out = hook(
            f"{b}.hook_attn_out", attention_with_hooks(block.attn, normalized, f"{b}.attn", hook)
        )
        if getattr(block, "mlp", None) is None:  # attention-only: no resid_mid
            residual = hook(f"{b}.hook_resid_post", resid_pre + attn_out)
            continue
        resid_mid = hook(f"{b}.hook_resid_mid", resid_pre + attn_out)
        normalized = layer_norm_with_hooks(block.ln2, resid_mid, f"{b}.ln2", hook)
        mlp_out = hook(f"{b}.hook_mlp_out", mlp_with_hooks(block.mlp, normalized, f"{b}.mlp", hook))
        residual = hook(f"{b}.hook_resid_post", resid_mid + mlp_out)
    return model.unembed(layer_norm_with_hooks(model.ln_final, residual, "ln_final", hook))


def run_with_cache(
    model: nn.Module,
    tokens: Int[Tensor, "batch posn"],
    patches: dict[str, Tensor] | None = None,
) -> tuple[Float[Tensor, "batch posn d_vocab"], dict[str, Tensor]]:
    """The logits of a run in which each activation named in `patches` is replaced by its
    value, and every activation of that run, as the run used it, by its TransformerLens
    name. Without patches, the model's own run. The patch values are left as they are.

    A patch must name an activation the run computes, or it raises a KeyError that names
    each unknown name; its value must have that activation's exact shape (no broadcasting),
    or it raises a ValueError that names the activation and both shapes."""
    patches = patches or {}
    cache = {}

    def record(name: str, activation: Tensor) -> Tensor:
        if name in patches:
            value = patches[name]
            if value.shape != activation.shape:
                raise ValueError(
                    f"the patch of {name} has shape {tuple(value.shape)}; the run's {name} "
                    f"has shape {tuple(activation.shape)}"
                )
            activation = value
        cache[name] = activation  # after the patch: the cache is the run that happened
        return activation

    logits = run_with_hooks(model, tokens, record)
    # Only the finished run knows every name it reaches: a typo must not pass for a patch.
    unknown = sorted(set(patches) - set(cache))
    if unknown:
        raise KeyError(f"this run computes no activation named {', '.join(unknown)}")
    return logits, cache


def run_with_patch(
    model: nn.Module, tokens: Int[Tensor, "batch posn"], name: str, value: Tensor
) -> Float[Tensor, "batch posn d_vocab"]:
    """The logits of a run in which the activation `name` is replaced by `value`."""
    return run_with_cache(model, tokens, {name: value})[0]


def decompose_resid(
    cache: dict[str, Tensor], model: nn.Module
) -> tuple[Float[Tensor, "component batch posn d_model"], list[str]]:
    """The final residual stream as a stack of the parts that sum to it, and their labels:
    embed, pos_embed, then per layer each head's output (L0H0, ...), the layer's b_O, and
    its MLP's output (L0 MLP), where it has one."""
    parts, labels = [cache["hook_embed"], cache["hook_pos_embed"]], ["embed", "pos_embed"]
    for i, block in enumerate(model.blocks):
        # Head h writes z[h] W_O[h]; b_O is added once for the layer, not once per head.
        heads = einops.einsum(
            cache[f"blocks.{i}.attn.hook_z"],
            block.attn.W_O,
            "batch posn n_heads d_head, n_heads d_head d_model -> n_heads batch posn d_model",
        )
        parts += [*heads, block.attn.b_O.expand_as(cache["hook_embed"])]
        labels += [f"L{i}H{h}" for h in range(len(heads))] + [f"L{i} b_O"]
        if getattr(block, "mlp", None) is not None:
            parts.append(cache[f"blocks.{i}.hook_mlp_out"])
            labels.append(f"L{i} MLP")
    return torch.stack(parts), labels


def count_stream_vectors(
    cfg: Config, n_ctx: int = 1, *, pos_embed: bool = True, biases: bool = True
) -> dict[str, int]:
    """How many distinct vectors the stream's sums draw on in a context of n_ctx tokens.

    Embeddings: a token row (at most one new one per position) and a position row where
    positions are learned. Messages: a head's message at a position mixes one vector per
    source position (v_j W_O), so the source vectors grow with the context. Memories: the rows
    of W_out, the same at every position (only their activations change). Biases: b_O and
    b_out per layer, the same at every position. At n_ctx = 1 these are the vectors added at
    each position."""
    return {
        "embeddings": (2 if pos_embed else 1) * n_ctx,
        "messages": cfg.n_layers * cfg.n_heads * n_ctx,
        "memories": cfg.n_layers * cfg.d_mlp,
        "biases": 2 * cfg.n_layers if biases else 0,
    }


# A Llama-3-8B-sized model in the course's config. It has 8 key-value heads shared by its 32
# query heads (grouped-query attention): each query head still writes its own output through
# its own slice of W_O, so it sends 32 messages per layer. No learned positions (RoPE), no
# biases, and its SwiGLU MLP still has one W_out row (a memory) per neuron.
LLAMA3_8B = Config(
    d_model=4096, d_vocab=128256, n_ctx=8192, d_head=128, d_mlp=14336, n_heads=32, n_layers=32
)


def logit_lens(
    cache: dict[str, Tensor], model: nn.Module
) -> Float[Tensor, "layer batch posn d_vocab"]:
    """The logits the stream would give if the model stopped before block 0, 1, ..., and
    after the last: each point of the stream through ln_final (its own scale) and W_U."""
    n_layers = len(model.blocks)
    streams = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(n_layers)]
    streams.append(cache[f"blocks.{n_layers - 1}.hook_resid_post"])
    return torch.stack([model.unembed(model.ln_final(s)) for s in streams])


def direct_logit_attribution(
    cache: dict[str, Tensor], model: nn.Module, correct: int, wrong: int
) -> tuple[Float[Tensor, "component batch posn"], list[str]]:
    """Each part of the final stream's share of logit[correct] - logit[wrong], and labels.

    ln_final is linear once its scale is frozen at the value the run computed: each part is
    centred, divided by that scale, multiplied by w, and read along W_U[:, correct] -
    W_U[:, wrong]. What no part owns, ln_final's b and b_U, is the last component, "bias";
    the shares then sum to the logit difference exactly.
    """
    parts, labels = decompose_resid(cache, model)
    direction = model.unembed.W_U[:, correct] - model.unembed.W_U[:, wrong]
    centred = parts - parts.mean(dim=-1, keepdim=True)
    ln = model.ln_final
    shares = (centred / cache["ln_final.hook_scale"] * ln.w) @ direction
    b_U = model.unembed.b_U
    bias = ln.b @ direction + b_U[correct] - b_U[wrong]
    return torch.cat([shares, bias.expand_as(shares[:1])]), [*labels, "bias"]


def patch_sweep(
    model: nn.Module,
    clean: Int[Tensor, "batch posn"],
    corrupted: Int[Tensor, "batch posn"],
    metric: Callable[[Tensor], Tensor | float],
    hook: str = "hook_resid_pre",
) -> Float[Tensor, "layer posn"]:
    """Activation patching over layers and positions: the corrupted run, with the clean run's
    `blocks.{layer}.{hook}` put back at one position (in every row of the batch), scored by
    `metric(logits)`. Normalised: 0 where the patch changes nothing (the corrupted run's
    metric), 1 where it restores the clean run's. `hook` names an activation whose second
    axis is the position (hook_resid_pre, hook_attn_out, hook_mlp_out, ...)."""
    clean_logits, clean_cache = run_with_cache(model, clean)
    corrupted_logits, corrupted_cache = run_with_cache(model, corrupted)
    low, high = float(metric(corrupted_logits)), float(metric(clean_logits))
    sweep = torch.zeros(len(model.blocks), clean.shape[1])
    for layer in range(len(model.blocks)):
        name = f"blocks.{layer}.{hook}"
        for pos in range(clean.shape[1]):
            # Upstream of the patch the run is the corrupted one: its cache is what it computes.
            value = corrupted_cache[name].clone()  # a copy: the cache serves every position
            value[:, pos] = clean_cache[name][:, pos]
            sweep[layer, pos] = float(metric(run_with_patch(model, corrupted, name, value)))
    return (sweep - low) / (high - low)
