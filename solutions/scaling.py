"""Chapter 6: scaling, napkin math against measurement.

How many parameters a GPT-2-shaped model has (the formula and the exact count), how much
compute training it takes (6·N·D) and how a budget splits between parameters and tokens
(Chinchilla's ~20 tokens per parameter), how to shape a model for a budget, what its
KV cache weighs, how to fit the power laws that measurements follow, and where, at one
compute budget, the loss is lowest.
"""

import math

import numpy as np
from jaxtyping import Int
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from solutions.config import Config
from solutions.transformer import lm_loss

# Chinchilla (Hoffmann et al., 2022): compute-optimal training sees about 20 tokens per
# parameter. With C = 6·N·D and D = 20·N, C = 120·N².
TOKENS_PER_PARAM = 20

# A Llama-3-8B-sized configuration in the course's terms: 32 query heads of 128 dimensions
# share 8 key/value heads (grouped-query attention), the MLP is 14,336 wide (SwiGLU, three
# matrices, which the course's MLP does not have), and the vocabulary holds 128,256 tokens.
LLAMA3_8B = Config(
    d_model=4096, d_vocab=128256, n_ctx=8192, d_head=128, d_mlp=14336, n_heads=32, n_layers=32
)
LLAMA3_8B_KV_HEADS = 8


def approx_params(cfg: Config) -> int:
    """About how many parameters a GPT-2-shaped cfg has: the weight matrices a token meets.

    The embedding (the unembedding too, when it is tied) and each layer's attention and MLP
    matrices, with n_heads·d_head = d_model. Left out: positions, biases and LayerNorms, which
    grow like d_model, not d_model².
    """
    d = cfg.d_model
    # (4 + 2k)·d² = 4·d² + 2·d·d_mlp, an integer whatever k is.
    return cfg.d_vocab * d + cfg.n_layers * (4 * d * d + 2 * d * cfg.d_mlp)


def exact_params(cfg: Config, tied: bool = False) -> int:
    """Every parameter of the course's Transformer(cfg); `tied=True` counts GPT-2's layout,
    whose unembedding is W_Eᵀ and has no bias (124,439,808 for GPT-2 small)."""
    d, heads = cfg.d_model, cfg.n_heads * cfg.d_head
    attn = 4 * d * heads + 3 * heads + d  # W_Q, W_K, W_V, W_O; b_Q, b_K, b_V; b_O
    mlp = 2 * d * cfg.d_mlp + cfg.d_mlp + d  # W_in, W_out; b_in, b_out
    block = attn + mlp + 2 * 2 * d  # and two LayerNorms, w and b each
    embeddings = cfg.d_vocab * d + cfg.n_ctx * d  # W_E, W_pos
    unembed = 0 if tied else d * cfg.d_vocab + cfg.d_vocab  # W_U, b_U
    return embeddings + cfg.n_layers * block + 2 * d + unembed  # 2·d: the final LayerNorm


def training_flops(n_params: int | float, n_tokens: int | float) -> int | float:
    """The FLOPs of training n_params parameters on n_tokens tokens, forward and backward
    passes: those of the products with the weights (attention's QKᵀ and AV left out)."""
    return 6 * n_params * n_tokens


def chinchilla_optimal(compute: int | float) -> tuple[float, float]:
    """The (parameters, tokens) that spend `compute` FLOPs compute-optimally, by Chinchilla's
    rule of TOKENS_PER_PARAM tokens per parameter."""
    # C = 6·N·(20·N) = 120·N².
    n_params = math.sqrt(compute / (6 * TOKENS_PER_PARAM))
    return n_params, TOKENS_PER_PARAM * n_params


def propose_config(n_params: int | float, d_vocab: int = 50257) -> Config:
    """A GPT-2-shaped Config with about n_params parameters (as approx_params counts them).

    Heads of 64 dimensions; d_model a multiple of 128, so that n_heads is whole and every
    matrix suits hardware that multiplies in tiles of 64 or 128; d_mlp = 4·d_model; between
    32 and 128 dimensions of width per layer of depth, as real models have.
    """
    # Of the shapes within 1% of the closest count, the one nearest GPT-2 small's 64 dimensions
    # per layer wins: any shape in the range trains about as well (Kaplan et al., 2020).

    def shaped(d_model: int, n_layers: int) -> Config:
        return Config(
            d_model=d_model,
            d_vocab=d_vocab,
            d_head=64,
            d_mlp=4 * d_model,
            n_heads=d_model // 64,
            n_layers=n_layers,
        )

    candidates = []  # (miss in log ratio, distance from 64 per layer, d_model, n_layers)
    for d_model in range(128, 32768 + 1, 128):
        # approx_params = V·d + 12·L·d² here: the depth that fits best is one of the two
        # whole numbers around (N - V·d) / (12·d²), kept within the allowed shapes.
        ideal = (n_params - d_vocab * d_model) / (12 * d_model**2)
        low, high = max(1, math.ceil(d_model / 128)), d_model // 32
        for n_layers in {
            min(max(math.floor(ideal), low), high),
            min(max(math.ceil(ideal), low), high),
        }:
            miss = abs(math.log(approx_params(shaped(d_model, n_layers)) / n_params))
            candidates.append((miss, abs(math.log(d_model / n_layers / 64)), d_model, n_layers))
    closest = min(c[0] for c in candidates)
    _, _, d_model, n_layers = min(
        (c for c in candidates if c[0] < closest + 0.01), key=lambda c: c[1]
    )
    return shaped(d_model, n_layers)


def kv_bytes_per_token(cfg: Config, n_kv_heads: int | None = None, bytes_per_value: int = 2) -> int:
    """Bytes the KV cache grows by with each token.

    With grouped-query attention, n_kv_heads < n_heads: several query heads share each
    key/value head. None means n_kv_heads = n_heads, GPT-2's multi-head attention. 2 bytes
    per value: bf16 or fp16.
    """
    n_kv_heads = cfg.n_heads if n_kv_heads is None else n_kv_heads
    return 2 * cfg.n_layers * n_kv_heads * cfg.d_head * bytes_per_value


def count_training_flops(model: nn.Module, tokens: Int[Tensor, "batch posn"]) -> int:
    """The FLOPs of one training step (forward pass, lm_loss, backward pass), as torch
    counts them.

    FlopCounterMode counts the matrix products (the whole of a model's FLOPs, bar a few per
    element); on the meta device it counts them without computing anything.
    """
    with FlopCounterMode(display=False) as counter:
        lm_loss(model(tokens), tokens).backward()
    return counter.get_total_flops()


def fit_power_law(x, y) -> tuple[float, float]:
    """(a, b) of the power law y ≈ b·x^a closest to the points, by least squares on
    log-log axes."""
    a, log_b = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return float(a), float(np.exp(log_b))


def isoflop_minimum(n_params, losses) -> tuple[float, float]:
    """(N, loss) at the bottom of the parabola fitted by least squares to the loss against
    log N: where, at one compute budget, a model would reach the lowest loss.

    Measured at a few sizes, the loss at a fixed budget is a valley in log N (too small a
    model cannot learn enough, too large a one sees too few tokens); its bottom falls
    between the sizes trained.
    """
    a, b, c = np.polyfit(np.log(np.asarray(n_params, float)), np.asarray(losses, float), 2)
    log_n = -b / (2 * a)  # where the derivative 2·a·x + b is zero
    return float(np.exp(log_n)), float(np.polyval([a, b, c], log_n))
