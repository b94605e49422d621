"""What chapter 0's checkers share: seeded random inputs, and the label of a scaled case."""

import torch
from torch import Tensor

from checks._core import scaled, seeded

LARGE = 1e3  # the scale of the large-magnitude case


def _scaled(scale: float) -> str:
    return scaled("entries", scale)


def _randn(seed: int, *shapes: tuple[int, ...], scale: float = 1.0) -> list[Tensor]:
    gen = seeded(seed)
    return [torch.randn(shape, generator=gen) * scale for shape in shapes]
