"""Chapter 3's checkers of the mixture of experts: the router, the layer, RᵀR, the balance
loss and the FLOPs saved."""

import torch
import torch.nn.functional as F

from checks._attention_diagnosis import require_int
from checks._configs import MLP_NOT_4X
from checks._core import exercise, plural, randomize, seeded
from checks.mlp._common import cfg_name, check_grad
from solutions import mlp as ref
from solutions.config import TINY, Config

RENORMALISED_AT_1 = (
    "renormalised the one weight at k = 1: p / p is exactly 1 whatever the logits, so the "
    "router would learn nothing from the task. At k = 1 the weight is the chosen expert's "
    "probability itself, as in the Switch Transformer"
)


def _route_gradients(check, route, k: int) -> None:
    """probs and R must carry the logits' gradient, as the reference's do."""
    logits = (torch.randn(6, 5, generator=seeded(58 + k)) * 2).requires_grad_()
    weights = torch.randn(2, 6, 5, generator=seeded(59 + k))
    got = check.pair(check.call(route, logits, k), "(probs, R)")
    for name, out, expected, w in zip(
        ["probs", "R"], got, ref.route(logits, k), weights, strict=True
    ):
        expected_grad = torch.autograd.grad((expected * w).sum(), logits, retain_graph=True)[0]
        check_grad(check, out, w, logits, expected_grad, f"{name} back to the logits")


def _route_mistakes(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """The routing matrix R that each usual mistake gives."""
    probs, R = ref.route(logits, k)
    chosen = (R > 0).float()
    mistakes = {}
    if k == 1:
        mistakes[RENORMALISED_AT_1] = chosen
    else:
        mistakes[
            "did not renormalise the k kept weights to sum to 1 (only k = 1 keeps the "
            "probability itself)"
        ] = probs * chosen
    top = logits.topk(k)
    mistakes[
        "applied the softmax to the zero-filled top-k logits: the experts not chosen must get "
        "weight exactly 0"
    ] = torch.zeros_like(logits).scatter(-1, top.indices, top.values).softmax(-1)
    for wrong_k in {k - 1, k + 1} & set(range(logits.shape[-1] + 1)):
        wrong = f"kept {wrong_k} experts per position instead of k = {k}"
        mistakes[wrong] = ref.route(logits, wrong_k)[1]
        if wrong_k == 1:
            mistakes[wrong + ", and renormalised the one weight"] = ref.route(logits, 1)[1] > 0
    return {m: wrong.float() for m, wrong in mistakes.items()}


@exercise(ref.route)
def check_route(check, route):
    for i, (posn, n_experts, k) in enumerate(
        [(1, 4, 1), (6, 4, 2), (9, 8, 3), (5, 8, 8), (7, 5, 2), (10, 6, 1)]
    ):
        switch = " (the Switch Transformer's top-1)" if k == 1 else ""
        with check.case(f"{plural(posn, 'position')}, {n_experts} experts, k = {k}{switch}"):
            logits = torch.randn(posn, n_experts, generator=seeded(50 + i)) * 2
            probs, R = ref.route(logits, k)
            top = logits.topk(k)
            after = torch.zeros_like(logits).scatter(-1, top.indices, top.values.softmax(-1))
            got_probs, got_R = check.pair(check.call(route, logits, k), "(probs, R)")
            check.tensor(
                got_probs,
                probs,
                what="probs",
                mistakes={
                    "took the softmax after the top-k selection: probs is the softmax over "
                    "all experts, taken before selecting": after,
                    "returned the logits, not their softmax": logits,
                },
            )
            check.tensor(got_R, R, what="routing matrix R", mistakes=_route_mistakes(logits, k))
            if i in (1, 5):  # and the router can learn: gradients reach the logits
                _route_gradients(check, route, k)


@exercise(ref.MixtureOfExperts)
def check_mixture_of_experts(check, MixtureOfExperts):
    for i, (cfg, n_experts, k, posn) in enumerate(
        [
            (TINY, 4, 1, 1),
            (TINY, 4, 2, 9),
            (MLP_NOT_4X, 6, 3, 12),
            (MLP_NOT_4X, 3, 3, 5),
            (MLP_NOT_4X, 5, 1, 8),
        ]
    ):
        with check.case(
            f"{cfg_name(cfg)}, {n_experts} experts, k = {k}, {plural(posn, 'position')}"
        ):
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
                chosen = (R > 0)[..., None] * outs
                mistakes = (
                    {RENORMALISED_AT_1 + " (in route, or here)": chosen.sum(1)} if k == 1 else {}
                )
                mistakes |= {
                    "did not renormalise the top-k weights (for k ≥ 2 they sum to 1)": (
                        (probs * (R > 0))[..., None] * outs
                    ).sum(1),
                    "summed the chosen experts' outputs without their weights": chosen.sum(1),
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
            if i in (1, 4):  # and the gate can learn: gradients reach W_gate through R's weights
                w = torch.randn(posn, cfg.d_model, generator=seeded(75 + i))
                expected_grad = torch.autograd.grad((reference(x) * w).sum(), reference.W_gate)[0]
                check_grad(check, got, w, moe.W_gate, expected_grad, "output back to W_gate")


def _load_balance_mistakes(R: torch.Tensor) -> dict[str, torch.Tensor]:
    """What load_balance returns with each usual mistake."""
    RtR, mask = R.T @ R, (R > 0).float()
    squares = R.pow(2).sum(0)
    return {
        "multiplied R the other way round, R Rᵀ: that is [posn, posn], which positions share "
        "experts": R @ R.T,
        "used the 0/1 routing mask, (R > 0): the entries sum products of the weights, so the "
        "diagonal is each expert's sum of squared weights, not the positions it serves": mask.T
        @ mask,
        "put the weight each expert carries, R.sum(0), on the diagonal: the diagonal sums the "
        "squared weights, as every entry sums products": RtR
        - torch.diag(squares)
        + torch.diag(R.sum(0)),
        "put the positions each expert serves, (R > 0).sum(0), on the diagonal: the diagonal "
        "sums the squared weights, as every entry sums products": RtR
        - torch.diag(squares)
        + torch.diag(mask.sum(0)),
        "multiplied the experts' total weights (R.sum(0) with itself): multiply the weights "
        "position by position, then sum": torch.outer(R.sum(0), R.sum(0)),
        "averaged over the positions: the entries are sums": RtR / len(R),
        "returned only the diagonal: the matrix is n_experts × n_experts": squares,
    }


@exercise(ref.load_balance)
def check_load_balance(check, load_balance):
    cases = [(12, 4, 2, 0.0), (9, 8, 3, 0.0), (10, 6, 1, 0.0), (1, 5, 2, 0.0), (20, 8, 2, 3.0)]
    for i, (posn, n_experts, k, offset) in enumerate(cases):
        switch = " (the probability itself as weight)" if k == 1 else ""
        crowded = ", a router crowding the last experts" if offset else ""
        with check.case(
            f"{plural(posn, 'position')}, {n_experts} experts, k = {k}{switch}{crowded}"
        ):
            logits = torch.randn(posn, n_experts, generator=seeded(120 + i)) * 2
            R = ref.route(logits + offset * torch.arange(n_experts) / n_experts, k)[1]
            got = check.call(load_balance, R)
            mistakes = _load_balance_mistakes(R)
            check.tensor(got, ref.load_balance(R), what="load_balance matrix", mistakes=mistakes)


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
                check_grad(check, got, torch.tensor(1.0), leaf, expected_grad, "loss back to probs")
    with check.case("a perfectly uniform router scores 1"):
        probs = torch.full((4, 4), 0.25)
        R = torch.eye(4)
        check.tensor(check.call(balance_loss, probs, R), torch.tensor(1.0), what="balance loss")


@exercise(ref.moe_flops_saved)
def check_moe_flops_saved(check, moe_flops_saved):
    for cfg, n_experts, k in [(TINY, 8, 2), (MLP_NOT_4X, 4, 1), (Config(), 64, 2), (TINY, 4, 4)]:
        with check.case(
            f"{cfg_name(cfg) if cfg in (TINY, MLP_NOT_4X) else 'GPT-2 small'}, {n_experts} experts, k = {k}"
        ):
            expected = ref.moe_flops_saved(cfg, n_experts, k)
            got = check.call(moe_flops_saved, cfg, n_experts, k)
            got = require_int(check, got, "FLOPs saved per token")
            gate = 2 * cfg.d_model * n_experts
            hints = {
                expected + gate: " You left out the gate: it costs 2·d_model·n_experts.",
                (expected + gate) // 2 - gate: " Count 2 FLOPs per multiply-add.",
                expected + gate - 2 * gate: " The gate is a cost of the mixture: subtract it.",
            }
            check.equal(got, expected, what="FLOPs saved per token", hint=hints.get(got, ""))
