"""What chapter 6b's checkers share: a small model, and a learner's number read and compared."""

import numbers

import torch

from checks._core import kind_of
from solutions.config import TINY
from solutions.transformer import Transformer

SMALL = TINY.but(n_ctx=8, n_layers=1)


def _as_float(check, value, what: str) -> float:
    """A learner's number as a float: a Python or NumPy number, or a 0-d tensor."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # NumPy's too
        return float(value)
    if value is None:
        check.fail(f"your code returned None for the {what}: did you forget `return`?")
    check.fail(f"the {what} should be a number, got {kind_of(value)}: {value!r:.80}.")


def _number(check, got: float, expected: float, what: str, mistakes: dict[str, float]) -> None:
    as64 = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    named = {mistake: as64(value) for mistake, value in mistakes.items()}
    check.tensor(as64(got), as64(expected), what=what, mistakes=named, rtol=1e-5, atol=1e-9)


def _model(seed: int) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(SMALL)
