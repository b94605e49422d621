"""What chapter 3's checkers share: tolerances, the cases' names, the exact GELU's slope (a
mistake several checks name), and calls of learner code that must keep gradients or weights."""

import torch

from solutions.config import TINY, Config

RTOL, ATOL = 2e-5, 2e-6  # float32 rounding is ~1e-6 here; the exact GELU is off by ~1e-4


def cfg_name(cfg: Config) -> str:
    return "TINY" if cfg == TINY else "ODD"


NO_GRAD = (
    "keep the computation in torch, differentiable: no torch.no_grad(), .detach(), .item(), "
    "numpy or torch.tensor(...) on the way"
)


def check_grad(check, out, weights, leaf, expected, what: str) -> None:
    """The gradient of (out · weights).sum() with respect to `leaf` must equal `expected`."""
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        check.fail(f"no gradient flows from your {what}: {NO_GRAD}.")
    (grad,) = torch.autograd.grad((out * weights).sum(), leaf, allow_unused=True, retain_graph=True)
    if grad is None:
        check.fail(f"no gradient flows from your {what}: {NO_GRAD}.")
    check.tensor(grad, expected, what=f"gradient from your {what}", rtol=1e-4, atol=1e-5)


def exact_gelu_grad(h: torch.Tensor) -> torch.Tensor:
    """The slope of the exact GELU x Φ(x): Φ(x) + x φ(x), φ the standard normal density."""
    return 0.5 * (1 + torch.erf(h / 2**0.5)) + h * torch.exp(-0.5 * h**2) / (2 * torch.pi) ** 0.5


def call_keeping_weights(check, fn, module: torch.nn.Module, *args, what: str):
    """`check.call(fn, module, *args)`, failing if it changed the module's weights in place:
    a row or column of a weight is a view, and writing into it writes into the model."""
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    got = check.call(fn, module, *args, what=what)
    for name, p in module.named_parameters():
        if not torch.equal(p.detach(), before[name]):
            check.fail(
                f"your {what} changed the model's weights in place ({name}). A weight, or a "
                "row or column of one (W_out[n]), is the model's own storage: compute new "
                "tensors (v = v - v.mean(), W = W * s), not in place (v -= ..., W *= ...)."
            )
    return got
