"""The gradient check every module checker shares: a model trains only the parameters its
forward pass lets a gradient reach.

Backpropagate one random cotangent through the learner's output and the reference's, on the
same weights and inputs, and compare the gradient of every parameter (and of every floating
input): a parameter read through `.data`, `.detach()` or under `torch.no_grad()` gets none.
"""

import re
from typing import Any

import torch
from torch import Tensor, nn

from checks._cases import seeded

CUT = (
    "did you use .data, .detach() or torch.no_grad() on the way? Use `self.{name}` itself in "
    "forward, or it will never train"
)


def check_gradients(
    check: Any,
    learner: nn.Module,
    reference: nn.Module,
    *inputs: Any,
    what: str,
    seed: int = 0,
    input_mistakes: dict[str, Tensor] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> None:
    """Fail unless `learner(*inputs)` passes to each parameter (by the reference's names) and
    to each floating input the gradient `reference(*inputs)` does, for one random cotangent.

    `input_mistakes` maps a mistake to the input gradient it gives (for the first input)."""
    leaves = [
        x.detach().clone().requires_grad_()
        if isinstance(x, Tensor) and x.is_floating_point()
        else x
        for x in inputs
    ]
    out = check.call(learner, *leaves, what=what)
    expected = reference(*leaves)
    if isinstance(out, tuple | list) and isinstance(expected, tuple | list):
        out, expected = out[0], expected[0]
    if not isinstance(out, Tensor) or out.shape != expected.shape:
        return  # the output checks name what is wrong with it
    theirs = dict(learner.named_parameters())
    named = [(n, p) for n, p in reference.named_parameters() if p.requires_grad and n in theirs]
    floats = [(i, x) for i, x in enumerate(leaves) if isinstance(x, Tensor) and x.requires_grad]
    if not expected.requires_grad or not named + floats:
        return  # a frozen reference: nothing to train
    if not out.requires_grad:
        shown = ", ".join(n for n, _ in named[:4]) + (", ..." if len(named) > 4 else "")
        check.fail(
            f"your {what} returns an output that carries no gradient, so none reaches "
            f"{shown or 'its input'}: the model trains through it, so compute it without "
            "`torch.no_grad()`, `.detach()` or `.data`."
        )
    cotangent = torch.randn(expected.shape, generator=seeded(seed))
    # The parameters first: a gradient cut on the way to one also changes the input's.
    want = torch.autograd.grad(
        (expected * cotangent).sum(),
        [p for _, p in named] + [x for _, x in floats],
        allow_unused=True,
    )
    got = torch.autograd.grad(
        (out * cotangent).sum(),
        [theirs[n] for n, _ in named] + [x for _, x in floats],
        allow_unused=True,
    )
    labels = [n for n, _ in named]
    labels += ["the input" if len(floats) == 1 else f"input {i + 1}" for i, _ in floats]
    largest = max([1.0] + [w.abs().max().item() for w in want if w is not None and w.numel()])
    for k, (name, g, w) in enumerate(zip(labels, got, want, strict=True)):
        parameter = k < len(named)
        # Skip where the reference passes nothing either (an expert no position chose), or
        # only float noise: b_K's gradient is zero, as the softmax ignores what q · b_K adds.
        if w is None or w.abs().max() < 1e-6 * largest:
            continue
        if g is None or not g.any():
            how = (
                CUT.format(name=re.sub(r"\.(\d+)", r"[\1]", name))
                if parameter
                else "did you detach the input, or compute under torch.no_grad()?"
            )
            check.fail(f"no gradient reaches {name} through your {what}: {how}.")
        mistakes = input_mistakes if k == len(named) else None
        check.tensor(
            g,
            w,
            what=f"gradient with respect to {name}",
            mistakes=mistakes,
            rtol=rtol,
            atol=atol,
        )
