"""Chapter 4: LayerNorm, which rescales each position's stream before a layer reads it.

Each position's d_model numbers are centred (mean 0) and scaled to unit variance, then
stretched by w and shifted by b, both learned, one per dimension.
"""

import copy

import einops
import torch
from jaxtyping import Float
from torch import Tensor, nn

from solutions.config import Config


class LayerNorm(nn.Module):
    """GPT-2's LayerNorm over the last axis (F.layer_norm's, with the config's eps): each
    position centred and scaled to unit variance, then stretched by w and shifted by b."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(
        self, residual: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        residual = residual - residual.mean(dim=-1, keepdim=True)
        # The biased variance (divide by d_model, not d_model - 1), as GPT-2 was trained with;
        # eps inside the square root keeps a constant stream from dividing by zero.
        scale = (residual.pow(2).mean(dim=-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt()
        return residual / scale * self.w + self.b


def layer_norm_jacobian(
    ln: LayerNorm, x: Float[Tensor, " d_model"]
) -> Float[Tensor, "d_model d_model"]:
    """J[i, j] = d ln(x)_i / d x_j at one position, in closed form (no autograd).

    It projects onto the mean-zero subspace (it kills the all-ones direction), takes out the
    component along x̂ (scaling x does not change x̂), and rescales the rest by 1/σ.
    """
    d = x.shape[-1]
    sigma = (x.var(dim=-1, unbiased=False) + ln.cfg.layer_norm_eps).sqrt()
    x_hat = (x - x.mean()) / sigma
    projection = torch.eye(d) - torch.ones(d, d) / d - torch.outer(x_hat, x_hat) / d
    return ln.w[:, None] * projection / sigma


def fold_layer_norm(
    ln: LayerNorm, W: Float[Tensor, "d_model n"], bias: Float[Tensor, " n"]
) -> tuple[Float[Tensor, "d_model n"], Float[Tensor, " n"]]:
    """The next layer's (W', b'), with ln's w and b moved into it: for every x̂,
    x̂ @ W' + b' == (x̂ * w + b) @ W + bias."""
    return ln.w[:, None] * W, ln.b @ W + bias


def fold_transformer(model: nn.Module) -> nn.Module:
    """A copy of a Transformer (chapter 5) that gives the same logits on every input, its
    LayerNorms' w and b folded into the layers that read them: every LayerNorm of the copy
    only centres and scales (w = 1, b = 0). `model` itself is left as it was."""
    folded = copy.deepcopy(model)
    # Each head's W_Q (or W_K, W_V) side by side: one [d_model, n_heads·d_head] matrix.
    side_by_side = "n_heads d_model d_head -> d_model (n_heads d_head)"
    per_head = "d_model (n_heads d_head) -> n_heads d_model d_head"
    with torch.no_grad():
        for block in folded.blocks:
            attn = block.attn
            for W, b in [(attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)]:
                W_new, b_new = fold_layer_norm(
                    block.ln1, einops.rearrange(W, side_by_side), b.flatten()
                )
                W.copy_(einops.rearrange(W_new, per_head, n_heads=attn.cfg.n_heads))
                b.copy_(b_new.view_as(b))
            mlp = block.mlp
            W_in, b_in = fold_layer_norm(block.ln2, mlp.W_in, mlp.b_in)
            mlp.W_in.copy_(W_in), mlp.b_in.copy_(b_in)
        unembed = folded.unembed
        W_U, b_U = fold_layer_norm(folded.ln_final, unembed.W_U, unembed.b_U)
        unembed.W_U.copy_(W_U), unembed.b_U.copy_(b_U)
        for block in folded.blocks:
            for ln in (block.ln1, block.ln2):
                ln.w.fill_(1.0), ln.b.zero_()
        folded.ln_final.w.fill_(1.0), folded.ln_final.b.zero_()
    return folded


class RMSNorm(nn.Module):
    """RMSNorm: LayerNorm without the mean subtraction and without b.

    It equals LayerNorm (b = 0) exactly when x already has mean zero; otherwise the mean
    counts in the scale and survives into the output. Llama and T5 use it: one fewer
    reduction, and it trains as well.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.w = nn.Parameter(torch.ones(cfg.d_model))

    def forward(
        self, residual: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        rms = (residual.pow(2).mean(dim=-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt()
        return residual / rms * self.w
