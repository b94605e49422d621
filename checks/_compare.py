"""How a verdict words a mismatch: which verb a description takes, a tolerance that scales
with the values, a hint for a wrong shape, where and how far the values differ."""

import numbers
import re
from typing import Any

import torch
from torch import Tensor


def _plural(what: str) -> bool:
    """Whether a description such as "masked scores" or "sum over heads" takes a plural verb:
    its head noun is the last word before any "of", "over", "through", "for" or "(".
    """
    head = re.split(r" (?:of|over|through|for) | \(", what, maxsplit=1)[0]
    word = head.split()[-1] if head.split() else ""
    return word.endswith("s") and not word.endswith("ss")


def kind_of(value: Any) -> str:
    """What a value is, as a verdict names it: "None", "an int", "a str", "a tuple"."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def integer_value(got: Any) -> int | None:
    """The course's one rule for "an integer": a Python or NumPy integer, or a one-element
    integer tensor, read as an int; anything else (a bool, a float, even 12.0) is None."""
    if isinstance(got, Tensor) and got.numel() == 1 and not got.is_floating_point():
        got = got.item()
    if isinstance(got, numbers.Integral) and not isinstance(got, bool):
        return int(got)
    if type(got).__module__ == "numpy" and getattr(got, "dtype", None) is not None:
        if got.dtype.kind in "iu" and getattr(got, "ndim", 1) == 0:  # a 0-d NumPy array
            return int(got)
    return None


def why_not_an_integer(got: Any) -> str:
    """What to change when `integer_value(got)` is None."""
    if isinstance(got, float) or (isinstance(got, Tensor) and got.is_floating_point()):
        return "dividing with / gives a float: use // (or int(...) once the count is exact)"
    if isinstance(got, Tensor):
        return "return one number, as a Python int"
    return "return a Python int"


def require_int(check: Any, got: Any, what: str) -> int:
    """The count as an int (a Python or NumPy integer, or a one-element integer tensor),
    or a verdict: a float from `/` is not one."""
    if got is None:
        check.fail(f"your code returned None for the {what}: did you forget `return`?")
    value = integer_value(got)
    if value is None:
        check.fail(
            f"the {what} should be an int, got {kind_of(got)} ({got!r:.80}): "
            f"{why_not_an_integer(got)}."
        )
    return value


def _close(got: Tensor, target: Tensor, rtol: float, atol: float) -> bool:
    """allclose with an absolute tolerance that scales with the target's magnitude."""
    tolerance = atol * max(1.0, target.abs().max().item()) if target.numel() else atol
    return torch.allclose(got.detach(), target.detach(), rtol=rtol, atol=tolerance)


def _shape_hint(got: tuple[int, ...], expected: tuple[int, ...]) -> str:
    if sorted(got) == sorted(expected):
        return " The same sizes in another order: check the order of your axes."
    if len(got) != len(expected):
        axes = lambda n: f"{n} axis" if n == 1 else f"{n} axes"  # noqa: E731
        return f" That is {axes(len(got))} instead of {axes(len(expected))}."
    return ""


def _difference(got: Tensor, expected: Tensor, inputs: tuple = ()) -> str:
    """Where and how far `got` is off: the largest error, a constant factor if there is one,
    and the entries around the largest error (with the input there, for any input of the
    output's shape), since the first entries can agree while the error sits elsewhere."""
    error = (got.double() - expected.double()).abs()
    worst = torch.unravel_index(error.argmax(), error.shape) if error.ndim else ()
    index = tuple(int(i) for i in worst)
    lines = [f"  max abs error {error.max().item():.3g} at index {list(index)}"]
    flat_got, flat_exp = got.double().flatten(), expected.double().flatten()
    nonzero = flat_exp.abs() > 1e-8
    # One entry of a larger output is always "a constant factor" off, so the ratio says
    # nothing there; a scalar answer's ratio is all there is to say (a mean for a sum: 1/n).
    if nonzero.sum() > 1 or (expected.ndim == 0 and nonzero.any()):
        ratio = flat_got[nonzero] / flat_exp[nonzero]
        constant = torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-3)
        if constant and ratio[0].abs() > 1e-6:
            lines.append(
                f"  your values are the expected ones times {ratio[0].item():.4g}: "
                "look for an extra or missing scale factor."
            )
    shown = [("expected", expected), ("got", got)]
    shown += [
        ("input" if len(inputs) == 1 else f"input {i + 1}", x)
        for i, x in enumerate(inputs)
        if isinstance(x, Tensor) and x.shape == got.shape
    ]
    where, pick = _around(index, got.shape)
    width = max(len(name) for name, _ in shown)
    for name, values in shown:
        lines.append(f"  {name:<{width}}{where} = {_fmt(pick(values))}")
    return "\n".join(lines)


def _around(index: tuple[int, ...], shape: torch.Size, n: int = 4):
    """The index text and the selector of `n` entries along the last axis around `index`."""
    if not index:
        return "", lambda t: t
    last = shape[-1]
    start = max(0, min(index[-1] - n // 2 + 1, last - n))
    stop = min(last, start + n)
    where = "[" + ", ".join([*map(str, index[:-1]), f"{start}:{stop}"]) + "]"
    return where, lambda t: t.detach()[index[:-1]][start:stop]


def _fmt(t: Tensor) -> str:
    values = t.flatten().tolist()
    return "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values) + "]"


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
