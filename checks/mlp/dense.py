"""Chapter 3's checkers of the dense MLP: gelu_new, the MLP, gelu_new's slope and the MLP's
Jacobian at a point."""

import math

import torch
import torch.nn.functional as F

from checks._configs import MLP_NOT_4X
from checks._core import exercise, plural, randomize, seeded
from checks.mlp._common import ATOL, RTOL, call_keeping_weights, cfg_name, exact_gelu_grad
from solutions import mlp as ref
from solutions.config import TINY


def _mlp_mistakes(mlp: ref.MLP, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What an MLP computes with each usual mistake, on the same weights."""
    W_in, b_in, W_out, b_out = mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out
    pre = x @ W_in + b_in
    return {
        "used ReLU: GPT-2's GELU is gelu_new, the tanh approximation": F.relu(pre) @ W_out + b_out,
        "used the exact GELU (F.gelu without approximate='tanh'): GPT-2's is the tanh "
        "approximation, gelu_new": F.gelu(pre) @ W_out + b_out,
        "used no activation at all": pre @ W_out + b_out,
        "forgot the bias b_in": ref.gelu_new(x @ W_in) @ W_out + b_out,
        "forgot the bias b_out": ref.gelu_new(pre) @ W_out,
        "applied the activation after W_out instead of between W_in and W_out": ref.gelu_new(
            pre @ W_out + b_out
        ),
        "applied the activation to the input, before W_in": (ref.gelu_new(x) @ W_in + b_in) @ W_out
        + b_out,
        "confused W_in and W_out (x @ W_out.T ... @ W_in.T)": ref.gelu_new(x @ W_out.T + b_in)
        @ W_in.T
        + b_out,
    }


@exercise(ref.gelu_new)
def check_gelu_new(check, gelu_new):
    cases = [
        ("a grid from -6 to 6", torch.linspace(-6, 6, 241)),
        (
            "random values of order 2, shape (2, 3, 5)",
            torch.randn(2, 3, 5, generator=seeded(0)) * 2,
        ),
        ("zero and large values", torch.tensor([0.0, -30.0, 30.0, -8.0, 8.0])),
    ]
    for description, x in cases:
        with check.case(description):
            expected = ref.gelu_new(x)
            mistakes = {
                "used ReLU: GPT-2's GELU is smooth, 0.5 x (1 + tanh(...))": F.relu(x),
                "wrote the exact GELU, x Φ(x): GPT-2 uses the tanh approximation": F.gelu(x),
                "dropped the cubic term 0.044715 x³": 0.5 * x * (1 + torch.tanh(0.7978846 * x)),
                "used the sigmoid approximation x σ(1.702 x)": x * torch.sigmoid(1.702 * x),
            }
            got = check.call(gelu_new, x)
            check.tensor(got, expected, what="activations", mistakes=mistakes, rtol=1e-5, atol=1e-6)


@exercise(ref.MLP)
def check_mlp(check, MLP):
    for i, (cfg, batch, posn) in enumerate(
        [(TINY, 1, 1), (TINY, 2, 5), (MLP_NOT_4X, 3, 7), (MLP_NOT_4X, 1, 16)]
    ):
        with check.case(f"{cfg_name(cfg)}, batch {batch}, {plural(posn, 'position')}"):
            reference = randomize(ref.MLP(cfg), seed=10 + i, scale=0.15)
            mlp = check.build(MLP, cfg)
            check.load_weights(mlp, reference)
            x = torch.randn(batch, posn, cfg.d_model, generator=seeded(20 + i))
            with torch.no_grad():
                expected = reference(x)
                mistakes = _mlp_mistakes(reference, x)
            got = check.call(mlp, x, what="MLP.forward")
            check.tensor(got, expected, what="MLP output", mistakes=mistakes, rtol=RTOL, atol=ATOL)
            if i in (1, 2):  # and it trains: every weight and bias gets its gradient
                check.gradients(mlp, reference, x, what="MLP", seed=i)


def _gelu_new_grad_mistakes(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each usual slip in differentiating 0.5 x (1 + tanh(u)), u = c (x + a x³), gives."""
    c, a = math.sqrt(2 / math.pi), 0.044715
    t = torch.tanh(c * (x + a * x**3))
    du = c * (1 + 3 * a * x**2)  # du/dx
    first = 0.5 * (1 + t)  # the product rule's term with x differentiated
    return {
        "took the slope of the exact GELU, Φ(x) + x·φ(x) (autograd through F.gelu without "
        "approximate='tanh'): GPT-2's GELU is the tanh form, gelu_new": exact_gelu_grad(x),
        "kept only the product rule's first term, 0.5 (1 + tanh(u)): x also multiplies "
        "tanh(u), whose derivative gives a second term": first,
        "kept only the product rule's second term: differentiating the factor x gives "
        "0.5 (1 + tanh(u)) too": 0.5 * x * (1 - t**2) * du,
        "wrote tanh'(u) as tanh²(u): it is 1 - tanh²(u), sech²(u)": first + 0.5 * x * t**2 * du,
        "wrote tanh'(u) as 1 - tanh(u): it is 1 - tanh²(u), sech²(u)": first
        + 0.5 * x * (1 - t) * du,
        "left out the chain rule's inner derivative du/dx of u = sqrt(2/π) (x + 0.044715 x³)": first
        + 0.5 * x * (1 - t**2),
        "differentiated 0.044715 x³ as 0.044715 x²: the power's 3 comes down as a factor": first
        + 0.5 * x * (1 - t**2) * c * (1 + a * x**2),
        "left sqrt(2/π) out of the inner derivative du/dx": first
        + 0.5 * x * (1 - t**2) * (1 + 3 * a * x**2),
        "dropped the 0.5 of the product rule's second term": first + x * (1 - t**2) * du,
        "returned gelu_new(x) itself, not its slope": ref.gelu_new(x),
        "returned ReLU's slope, a step from 0 to 1": (x > 0).float(),
    }


@exercise(ref.gelu_new_grad)
def check_gelu_new_grad(check, gelu_new_grad):
    cases = [
        ("a grid from -6 to 6", torch.linspace(-6, 6, 241)),
        ("random values of order 2, shape (4, 7)", torch.randn(4, 7, generator=seeded(5)) * 2),
        (
            "large |x|, where tanh saturates (slope 0 far left, 1 far right), and 0",
            torch.tensor([-50.0, -30.0, -12.0, -8.0, 0.0, 8.0, 12.0, 30.0, 50.0]),
        ),
    ]
    for description, x in cases:
        with check.case(description):
            expected = ref.gelu_new_grad(x)
            mistakes = _gelu_new_grad_mistakes(x)
            got = check.call(gelu_new_grad, x)
            # Autograd through PyTorch's fused kernel differs from the formula by ~1e-6.
            check.tensor(got, expected, what="slopes", mistakes=mistakes, rtol=1e-5, atol=1e-5)


@exercise(ref.mlp_jacobian)
def check_mlp_jacobian(check, mlp_jacobian):
    for i, cfg in enumerate([TINY, MLP_NOT_4X, MLP_NOT_4X]):
        with check.case(f"{cfg_name(cfg)}, a random point"):
            mlp = randomize(ref.MLP(cfg), seed=30 + i, scale=0.15)
            x = torch.randn(cfg.d_model, generator=seeded(40 + i))
            with torch.no_grad():
                expected = ref.mlp_jacobian(mlp, x)
                h = x @ mlp.W_in + mlp.b_in
                mistakes = {
                    "returned the transpose: row i of autograd's Jacobian is output "
                    "coordinate i": expected.T,
                    "left out diag(φ'(h)): the MLP is linear only after the slopes of the "
                    "neurons at h": (mlp.W_in @ mlp.W_out).T,
                    "used φ(h) instead of its derivative φ'(h)": (
                        mlp.W_in * ref.gelu_new(h) @ mlp.W_out
                    ).T,
                    "used the exact GELU's slope, Φ(h) + h·φ(h) (autograd through F.gelu "
                    "without approximate='tanh'): GPT-2's is gelu_new": (
                        mlp.W_in * exact_gelu_grad(h) @ mlp.W_out
                    ).T,
                    "took φ' at x W_in, without b_in": (
                        mlp.W_in * ref.gelu_new_grad(x @ mlp.W_in) @ mlp.W_out
                    ).T,
                }
            got = call_keeping_weights(check, mlp_jacobian, mlp, x, what="mlp_jacobian")
            check.tensor(got, expected, what="Jacobian", mistakes=mistakes, rtol=1e-3, atol=1e-5)
