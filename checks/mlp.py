"""Checkers for chapter 3 (solutions/mlp.py).

Every check uses random weights, biases included, on TINY and on MLP_NOT_4X (d_mlp ≠
4 · d_model; "ODD" in the cases' names), with pre-activations of order 1 to 3, where GPT-2's
tanh GELU and the exact GELU differ by 1e-4 and more: the tolerances are tighter than that,
so the exact GELU fails.
"""

import torch
import torch.nn.functional as F

from checks._attention_diagnosis import require_int
from checks._configs import MLP_NOT_4X
from checks._core import exercise, plural, randomize, seeded
from solutions import mlp as ref
from solutions.config import TINY, Config

__all__ = [
    "check_gelu_new",
    "check_mlp",
    "check_mlp_jacobian",
    "check_route",
    "check_mixture_of_experts",
    "check_balance_loss",
    "check_moe_flops_saved",
    "check_highway",
]

RTOL, ATOL = 2e-5, 2e-6  # float32 rounding is ~1e-6 here; the exact GELU is off by ~1e-4


def _name(cfg: Config) -> str:
    return "TINY" if cfg == TINY else "ODD"


NO_GRAD = (
    "keep the computation in torch, differentiable: no torch.no_grad(), .detach(), .item(), "
    "numpy or torch.tensor(...) on the way"
)


def _check_grad(check, out, weights, leaf, expected, what: str) -> None:
    """The gradient of (out · weights).sum() with respect to `leaf` must equal `expected`."""
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        check.fail(f"no gradient flows from your {what}: {NO_GRAD}.")
    (grad,) = torch.autograd.grad((out * weights).sum(), leaf, allow_unused=True, retain_graph=True)
    if grad is None:
        check.fail(f"no gradient flows from your {what}: {NO_GRAD}.")
    check.tensor(grad, expected, what=f"gradient from your {what}", rtol=1e-4, atol=1e-5)


def _exact_gelu_grad(h: torch.Tensor) -> torch.Tensor:
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
        with check.case(f"{_name(cfg)}, batch {batch}, {plural(posn, 'position')}"):
            reference = randomize(ref.MLP(cfg), seed=10 + i, scale=0.15)
            mlp = check.build(MLP, cfg)
            check.load_weights(mlp, reference)
            x = torch.randn(batch, posn, cfg.d_model, generator=seeded(20 + i))
            with torch.no_grad():
                expected = reference(x)
                mistakes = _mlp_mistakes(reference, x)
            got = check.call(mlp, x, what="MLP.forward")
            check.tensor(got, expected, what="MLP output", mistakes=mistakes, rtol=RTOL, atol=ATOL)


@exercise(ref.mlp_jacobian)
def check_mlp_jacobian(check, mlp_jacobian):
    for i, cfg in enumerate([TINY, MLP_NOT_4X, MLP_NOT_4X]):
        with check.case(f"{_name(cfg)}, a random point"):
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
                        mlp.W_in * _exact_gelu_grad(h) @ mlp.W_out
                    ).T,
                    "took φ' at x W_in, without b_in": (
                        mlp.W_in * ref.gelu_new_grad(x @ mlp.W_in) @ mlp.W_out
                    ).T,
                }
            got = call_keeping_weights(check, mlp_jacobian, mlp, x, what="mlp_jacobian")
            check.tensor(got, expected, what="Jacobian", mistakes=mistakes, rtol=1e-3, atol=1e-5)


def _route_gradients(check, route) -> None:
    """probs and R must carry the logits' gradient, as the reference's do."""
    logits = (torch.randn(6, 5, generator=seeded(58)) * 2).requires_grad_()
    weights = torch.randn(2, 6, 5, generator=seeded(59))
    got = check.pair(check.call(route, logits, 2), "(probs, R)")
    for name, out, expected, w in zip(
        ["probs", "R"], got, ref.route(logits, 2), weights, strict=True
    ):
        expected_grad = torch.autograd.grad((expected * w).sum(), logits, retain_graph=True)[0]
        _check_grad(check, out, w, logits, expected_grad, f"{name} back to the logits")


@exercise(ref.route)
def check_route(check, route):
    for i, (posn, n_experts, k) in enumerate(
        [(1, 4, 1), (6, 4, 2), (9, 8, 3), (5, 8, 8), (7, 5, 2)]
    ):
        with check.case(f"{plural(posn, 'position')}, {n_experts} experts, k = {k}"):
            logits = torch.randn(posn, n_experts, generator=seeded(50 + i)) * 2
            probs, R = ref.route(logits, k)
            out = check.call(route, logits, k)
            if not (isinstance(out, tuple) and len(out) == 2):
                check.fail("route should return a pair (probs, R).")
            got_probs, got_R = out
            check.tensor(
                got_probs,
                probs,
                what="probs",
                mistakes={
                    "took the softmax after the top-k selection: probs is the softmax over "
                    "all experts, taken before selecting": R,
                    "returned the logits, not their softmax": logits,
                },
            )
            kept = probs * (R > 0)
            mistakes = {
                "did not renormalise the k kept weights to sum to 1": kept,
                "applied the softmax to the zero-filled top-k logits: the experts not chosen "
                "must get weight exactly 0": torch.zeros_like(logits)
                .scatter(-1, logits.topk(k).indices, logits.topk(k).values)
                .softmax(-1),
            }
            for wrong_k in {k - 1, k + 1} & set(range(n_experts + 1)):
                mistakes[f"kept {wrong_k} experts per position instead of k = {k}"] = ref.route(
                    logits, wrong_k
                )[1]
            check.tensor(got_R, R, what="routing matrix R", mistakes=mistakes)
            if i == 1:  # and the router can learn: gradients reach the logits
                _route_gradients(check, route)


@exercise(ref.MixtureOfExperts)
def check_mixture_of_experts(check, MixtureOfExperts):
    for i, (cfg, n_experts, k, posn) in enumerate(
        [(TINY, 4, 1, 1), (TINY, 4, 2, 9), (MLP_NOT_4X, 6, 3, 12), (MLP_NOT_4X, 3, 3, 5)]
    ):
        with check.case(f"{_name(cfg)}, {n_experts} experts, k = {k}, {plural(posn, 'position')}"):
            reference = randomize(ref.MixtureOfExperts(cfg, n_experts, k), seed=60 + i, scale=0.3)
            moe = check.build(MixtureOfExperts, cfg, n_experts, k)
            check.load_weights(moe, reference)
            x = torch.randn(posn, cfg.d_model, generator=seeded(70 + i))
            with torch.no_grad():
                probs, R = ref.route(x @ reference.W_gate, k)
                outs = torch.stack([e(x[None])[0] for e in reference.experts], dim=1)
                exact = torch.stack(
                    [F.gelu(x @ e.W_in + e.b_in) @ e.W_out + e.b_out for e in reference.experts],
                    dim=1,
                )
                expected = (R[..., None] * outs).sum(1)  # the dense loop, every expert run
                mistakes = {
                    "did not renormalise the top-k weights": (
                        (probs * (R > 0))[..., None] * outs
                    ).sum(1),
                    "summed the chosen experts' outputs without their weights": (
                        (R > 0)[..., None] * outs
                    ).sum(1),
                    "weighted every expert by its probability (no top-k)": (
                        probs[..., None] * outs
                    ).sum(1),
                    "used the exact GELU in the experts: each expert is the course's MLP, "
                    "with gelu_new": (R[..., None] * exact).sum(1),
                }
                for wrong_k in {k - 1, k + 1} & set(range(1, n_experts + 1)):
                    Rk = ref.route(x @ reference.W_gate, wrong_k)[1]
                    mistakes[f"used k = {wrong_k}, not self.k = {k}"] = (Rk[..., None] * outs).sum(
                        1
                    )
            got = check.call(moe, x, what="MixtureOfExperts.forward")
            check.tensor(
                got,
                expected,
                what="MixtureOfExperts output",
                mistakes=mistakes,
                rtol=1e-4,
                atol=1e-5,
            )
            if i == 1:  # and the gate can learn: gradients reach W_gate through R's weights
                w = torch.randn(posn, cfg.d_model, generator=seeded(75))
                expected_grad = torch.autograd.grad((reference(x) * w).sum(), reference.W_gate)[0]
                _check_grad(check, got, w, moe.W_gate, expected_grad, "output back to W_gate")


@exercise(ref.balance_loss)
def check_balance_loss(check, balance_loss):
    for i, (posn, n_experts, k) in enumerate([(8, 4, 1), (12, 4, 2), (30, 8, 3), (1, 5, 2)]):
        with check.case(f"{plural(posn, 'position')}, {n_experts} experts, k = {k}"):
            probs, R = ref.route(torch.randn(posn, n_experts, generator=seeded(80 + i)) * 2, k)
            expected = ref.balance_loss(probs, R)
            f = (R > 0).float().mean(0)
            mistakes = {
                "forgot the factor n_experts (a uniform router should score 1)": expected
                / n_experts,
                "counted each position k times in f: divide by the posn·k routing slots": expected
                * k,
                "used R, the renormalised weights, for P: P is the mean of probs": n_experts
                * (f / k * R.mean(0)).sum(),
                "used R, the renormalised weights, for f: f_i counts the routing slots "
                "expert i got, (R > 0)": n_experts * (R.mean(0) * probs.mean(0)).sum(),
                "summed probs over positions for P: P_i is their mean": expected * posn,
                "multiplied by the number of positions (probs.shape[0]), not n_experts "
                "(probs.shape[-1])": expected / n_experts * posn,
                "counted only each position's top expert (argmax) in f: count all k chosen "
                "experts, (R > 0)": n_experts
                * (F.one_hot(probs.argmax(-1), n_experts).float().mean(0) * probs.mean(0)).sum(),
            }
            got = check.call(balance_loss, probs, R)
            check.tensor(got, expected, what="balance loss", mistakes=mistakes)
            if i == 1:  # and it has a gradient for every expert's probability
                leaf = probs.detach().requires_grad_()
                expected_grad = torch.autograd.grad(ref.balance_loss(leaf, R), leaf)[0]
                got = check.call(balance_loss, leaf, R)
                _check_grad(
                    check, got, torch.tensor(1.0), leaf, expected_grad, "loss back to probs"
                )
    with check.case("a perfectly uniform router scores 1"):
        probs = torch.full((4, 4), 0.25)
        R = torch.eye(4)
        check.tensor(check.call(balance_loss, probs, R), torch.tensor(1.0), what="balance loss")


@exercise(ref.moe_flops_saved)
def check_moe_flops_saved(check, moe_flops_saved):
    for cfg, n_experts, k in [(TINY, 8, 2), (MLP_NOT_4X, 4, 1), (Config(), 64, 2), (TINY, 4, 4)]:
        with check.case(
            f"{_name(cfg) if cfg in (TINY, MLP_NOT_4X) else 'GPT-2 small'}, {n_experts} experts, k = {k}"
        ):
            expected = ref.moe_flops_saved(cfg, n_experts, k)
            got = check.call(moe_flops_saved, cfg, n_experts, k)
            require_int(check, got, "FLOPs saved per token")
            gate = 2 * cfg.d_model * n_experts
            hints = {
                expected + gate: " You left out the gate: it costs 2·d_model·n_experts.",
                (expected + gate) // 2 - gate: " Count 2 FLOPs per multiply-add.",
                expected + gate - 2 * gate: " The gate is a cost of the mixture: subtract it.",
            }
            check.equal(got, expected, what="FLOPs saved per token", hint=hints.get(got, ""))


@exercise(ref.Highway)
def check_highway(check, Highway):
    for i, (cfg, batch, posn) in enumerate([(TINY, 1, 1), (TINY, 2, 5), (MLP_NOT_4X, 3, 4)]):
        with check.case(f"{_name(cfg)}, batch {batch}, {plural(posn, 'position')}"):
            reference = randomize(ref.Highway(cfg), seed=90 + i, scale=0.3)
            block = check.build(Highway, cfg)
            check.load_weights(block, reference)
            x = torch.randn(batch, posn, cfg.d_model, generator=seeded(100 + i))
            with torch.no_grad():
                H, T = reference.transform(x), reference.gate(x)
                expected = reference(x)
                mistakes = {
                    "swapped the gate: H·(1-T) + x·T": H * (1 - T) + x * T,
                    "added x without the carry gate (1 - T)": H * T + x,
                    "dropped the carry term x·(1-T)": H * T,
                    "used the exact GELU in the transform: the course's H is gelu_new": (
                        F.gelu(x @ reference.W_H + reference.b_H) * T + x * (1 - T)
                    ),
                    "forgot the bias b_H in the transform": (
                        ref.gelu_new(x @ reference.W_H) * T + x * (1 - T)
                    ),
                }
                T_no_b = torch.sigmoid(x @ reference.W_T)
                mistakes["forgot the bias b_T in the gate"] = H * T_no_b + x * (1 - T_no_b)
            got = check.call(block, x, what="Highway.forward")
            check.tensor(got, expected, what="Highway output", mistakes=mistakes)
    for gate, b_T in [("closed (T = 0): the identity", -1e4), ("open (T = 1): the transform", 1e4)]:
        with check.case(f"the gate {gate}"):
            reference = randomize(ref.Highway(TINY), seed=110, scale=0.3)
            with torch.no_grad():
                reference.b_T.fill_(b_T)
            block = check.build(Highway, TINY)
            check.load_weights(block, reference)
            x = torch.randn(2, 3, TINY.d_model, generator=seeded(111))
            with torch.no_grad():
                expected = x if b_T < 0 else reference.transform(x)
            got = check.call(block, x, what="Highway.forward")
            check.tensor(got, expected, what="Highway output")
