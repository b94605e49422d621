"""Chapter 4: LayerNorm, which rescales each position's stream before a layer reads it.

Each position's d_model numbers are centred (mean 0) and scaled to unit variance, then
stretched by w and shifted by b, both learned, one per dimension.
"""

import torch
from jaxtyping import Float
from torch import Tensor, nn

from course.config import Config


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * w + b over the last axis, as GPT-2 and F.layer_norm do."""

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
