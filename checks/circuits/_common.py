"""What the circuits checkers share: the shapes, random attention-only models, patterns."""

import torch

from checks._cases import randomize, seeded
from solutions import circuits as ref
from solutions.config import Config

SQUARE = Config(d_model=32, d_vocab=23, n_ctx=16, d_head=8, d_mlp=64, n_heads=4, n_layers=2)


def random_model(cfg: Config, seed: int, n_layers: int = 2) -> ref.AttnOnlyTransformer:
    return randomize(ref.AttnOnlyTransformer(cfg.but(n_layers=n_layers)), seed=seed, scale=0.5)


def _patterns(batch: int, n_heads: int, posn: int, seed: int) -> torch.Tensor:
    """Random causal patterns, peaked enough that every diagonal holds different weights."""
    scores = torch.randn(batch, n_heads, posn, posn, generator=seeded(seed)) * 3
    future = torch.ones(posn, posn, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def _diagonal_mean(pattern, offset, queries=None):
    d = pattern.diagonal(offset=offset, dim1=-2, dim2=-1)
    return (d if queries is None else d[..., -queries:]).mean(dim=(0, -1))
