"""What checkers build their cases from: seeded inputs, randomized weights, and labels."""

import torch


def plural(n: int, noun: str, nouns: str = "") -> str:
    """`1 query`, `5 queries`: a count and its noun, for case labels."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def scaled(what: str, scale: float) -> str:
    """`, inputs scaled ×10` for a case label; nothing when the scale is 1."""
    return "" if scale == 1 else f", {what} scaled ×{scale:g}"


def seeded(seed: int) -> torch.Generator:
    """A generator for reproducible random inputs that leaves the global RNG untouched."""
    return torch.Generator().manual_seed(seed)


def randomize(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Fill every parameter (biases and LayerNorm weights too) with seeded random values.

    Initial values hide mistakes: a zero bias that the learner forgot adds nothing, and a
    LayerNorm weight of one cannot be told from a missing one.
    """
    gen = seeded(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return module
