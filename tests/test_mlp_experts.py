"""The chapter 3 checkers of the mixture of experts (route, MixtureOfExperts, load_balance,
balance_loss, moe_flops_saved) accept each however it is written, and name each usual mistake:
weights not renormalised at k ≥ 2 or renormalised at k = 1 (where the router then learns
nothing), the softmax after the top-k, the wrong k, a router that gets no gradient, the 0/1 mask
or the load where RᵀR's weights belong, f and P of the balance loss computed wrongly, a
forgotten gate; and they survive broken code."""

import einops
import pytest
import torch
import torch.nn.functional as F

from checks import mlp as checks
from solutions import mlp as ref
from solutions.mlp import MixtureOfExperts
from support import assert_accepts, assert_rejects

# --- mixture of experts --------------------------------------------------------------------


def learner_route(*, order="before", renormalise=True, renormalise_at_1=False, k_offset=0):
    def route(logits, k):
        k = k + k_offset
        probs = logits.softmax(-1)
        if order == "after":  # select the top-k logits, then softmax them
            top = logits.topk(k, dim=-1)
            R = torch.zeros_like(logits).scatter(-1, top.indices, top.values.softmax(-1))
            return R, R
        top = probs.topk(k, dim=-1)
        divide = renormalise and (k > 1 or renormalise_at_1)
        weights = top.values / top.values.sum(-1, keepdim=True) if divide else top.values
        return probs, torch.zeros_like(probs).scatter(-1, top.indices, weights)

    return route


def test_check_route_accepts_the_reference(capsys):
    assert_accepts(checks.check_route, learner_route(), capsys)


def test_check_route_accepts_a_mask_then_divide(capsys):
    def route(logits, k):
        probs = F.softmax(logits, dim=-1)
        threshold = probs.topk(k, dim=-1).values[:, -1:]
        kept = torch.where(probs >= threshold, probs, 0.0)
        return probs, kept / kept.sum(-1, keepdim=True) if k > 1 else kept

    assert_accepts(checks.check_route, route, capsys)


def test_check_route_accepts_a_softmax_over_the_top_k_and_a_one_hot_at_k_1(capsys):
    def route(logits, k):
        probs = logits.softmax(-1)
        if k == 1:
            top = probs.max(-1)
            return probs, F.one_hot(top.indices, probs.shape[-1]) * top.values[:, None]
        top = logits.topk(k, dim=-1)
        return probs, torch.zeros_like(probs).scatter(-1, top.indices, top.values.softmax(-1))

    assert_accepts(checks.check_route, route, capsys)


ROUTE_MISTAKES = {
    "not renormalised": (dict(renormalise=False), "did not renormalise"),
    "renormalised at k = 1": (dict(renormalise_at_1=True), "renormalised the one weight at k = 1"),
    "softmax after selection": (dict(order="after"), "softmax after the top-k"),
    "k + 1": (dict(k_offset=1), "experts per position instead of k"),
    "k - 1": (dict(k_offset=-1), "experts per position instead of k"),
}


@pytest.mark.parametrize("mistake", ROUTE_MISTAKES)
def test_check_route_rejects_and_names(mistake):
    switches, diagnosis = ROUTE_MISTAKES[mistake]
    assert_rejects(checks.check_route, learner_route(**switches), diagnosis)


def test_softmax_after_selection_gives_the_same_routing_matrix():
    """Only probs tells the two orders apart: their R are equal."""
    logits = torch.randn(10, 6)
    _, R = ref.route(logits, 2)
    top = logits.topk(2, dim=-1)
    after = torch.zeros_like(logits).scatter(-1, top.indices, top.values.softmax(-1))
    torch.testing.assert_close(R, after)


def learner_moe(*, renormalise=True, renormalise_at_1=False, k_offset=0):
    def forward(self, x):
        probs = (x @ self.W_gate).softmax(-1)
        top = probs.topk(self.k + k_offset, dim=-1)
        divide = renormalise and (self.k + k_offset > 1 or renormalise_at_1)
        w = top.values / top.values.sum(-1, keepdim=True) if divide else top.values
        out = torch.zeros_like(x)
        for slot in range(top.indices.shape[-1]):
            for e, expert in enumerate(self.experts):
                rows = top.indices[:, slot] == e
                out[rows] += w[rows, slot, None] * expert(x[None, rows])[0]
        return out

    return type("MixtureOfExperts", (MixtureOfExperts,), {"forward": forward})


def test_check_moe_names_experts_with_the_exact_gelu():
    def forward(self, x):
        _, R = ref.route(x @ self.W_gate, self.k)
        outs = [F.gelu(x @ e.W_in + e.b_in) @ e.W_out + e.b_out for e in self.experts]
        return (R[..., None] * torch.stack(outs, dim=1)).sum(1)

    variant = type("MixtureOfExperts", (MixtureOfExperts,), {"forward": forward})
    assert_rejects(checks.check_mixture_of_experts, variant, "exact GELU in the experts")


def test_check_moe_rejects_a_router_that_gets_no_gradient():
    def forward(self, x):
        with torch.no_grad():  # the routing weights then carry no gradient to W_gate
            _, R = ref.route(x @ self.W_gate, self.k)
        outs = torch.stack([e(x[None])[0] for e in self.experts], dim=1)
        return (R[..., None] * outs).sum(1)

    variant = type("MixtureOfExperts", (MixtureOfExperts,), {"forward": forward})
    assert_rejects(checks.check_mixture_of_experts, variant, "no gradient", "W_gate")


def test_check_route_rejects_a_detached_R():
    def route(logits, k):
        probs, R = ref.route(logits, k)
        return probs, R.detach()

    assert_rejects(checks.check_route, route, "no gradient flows from your R")


def test_check_load_balance_accepts_einsum_and_a_sum_of_outer_products(capsys):
    def by_einsum(R):
        return einops.einsum(R, R, "posn i, posn j -> i j")

    def by_positions(R):
        return sum(torch.outer(row, row) for row in R)

    assert_accepts(checks.check_load_balance, by_einsum, capsys)
    assert_accepts(checks.check_load_balance, by_positions, capsys)


LOAD_MISTAKES = {
    "R Rᵀ": (lambda R: R @ R.T, "R Rᵀ"),
    "0/1 mask": (lambda R: (R > 0).float().T @ (R > 0).float(), "0/1 routing mask"),
    "weight carried on the diagonal": (
        lambda R: R.T @ R - torch.diag((R**2).sum(0)) + torch.diag(R.sum(0)),
        "R.sum(0), on the diagonal",
    ),
    "positions served on the diagonal": (
        lambda R: (R.T @ R).fill_diagonal_(0) + torch.diag((R > 0).float().sum(0)),
        "(R > 0).sum(0), on the diagonal",
    ),
    "outer product of the loads": (lambda R: torch.outer(R.sum(0), R.sum(0)), "total weights"),
    "mean over positions": (lambda R: R.T @ R / len(R), "averaged over the positions"),
    "diagonal only": (lambda R: (R**2).sum(0), "only the diagonal"),
}


@pytest.mark.parametrize("mistake", LOAD_MISTAKES)
def test_check_load_balance_rejects_and_names(mistake):
    learner, words = LOAD_MISTAKES[mistake]
    assert_rejects(checks.check_load_balance, learner, words)


def test_renormalised_top_1_would_make_rtr_the_masks_and_switchs_does_not():
    """Renormalised, k = 1 routes with weight 1, so RᵀR would equal the 0/1 mask's; Switch's
    weights keep the k = 1 case of the checker able to tell the two apart."""
    R = ref.route(torch.randn(10, 6), 1)[1]
    mask = (R > 0).float()
    torch.testing.assert_close(R / R.sum(-1, keepdim=True), mask)
    assert not torch.allclose(ref.load_balance(R), mask.T @ mask)


def test_check_load_balance_survives_broken_code():
    assert_rejects(checks.check_load_balance, lambda R: None, "forget `return`")
    assert_rejects(checks.check_load_balance, lambda R: (R.T @ R).numpy(), "torch.Tensor")
    assert_rejects(checks.check_load_balance, lambda R: R.T @ R.T, "raised RuntimeError")


def test_check_balance_loss_rejects_a_loss_without_gradient():
    def balance_loss(probs, R):
        return torch.tensor(ref.balance_loss(probs, R).item())

    assert_rejects(checks.check_balance_loss, balance_loss, "no gradient", ".item()")


def test_check_moe_accepts_a_loop_over_slots(capsys):
    assert_accepts(checks.check_mixture_of_experts, learner_moe(), capsys)


def test_check_moe_accepts_the_dense_computation(capsys):
    def forward(self, x):
        _, R = ref.route(x @ self.W_gate, self.k)
        return sum(R[:, e, None] * expert(x[None])[0] for e, expert in enumerate(self.experts))

    variant = type("MixtureOfExperts", (MixtureOfExperts,), {"forward": forward})
    assert_accepts(checks.check_mixture_of_experts, variant, capsys)


def test_check_moe_rejects_unrenormalised_weights_and_the_wrong_k():
    assert_rejects(checks.check_mixture_of_experts, learner_moe(renormalise=False), "renormalise")
    assert_rejects(checks.check_mixture_of_experts, learner_moe(k_offset=1), "not self.k")


def test_check_moe_names_renormalising_at_k_1():
    learner = learner_moe(renormalise_at_1=True)
    assert_rejects(checks.check_mixture_of_experts, learner, "at k = 1", "Switch Transformer")


def test_renormalised_top_1_gives_the_router_no_gradient_and_switch_does():
    """The claim the chapter measures: at k = 1, p / p = 1 carries no gradient to the logits."""
    logits = torch.randn(16, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(16, 8, dtype=torch.float64)
    R = ref.route(logits, 1)[1]
    renormalised = R / R.sum(-1, keepdim=True)
    (zero,) = torch.autograd.grad((renormalised * weights).sum(), logits, retain_graph=True)
    (switch,) = torch.autograd.grad((R * weights).sum(), logits)
    assert zero.abs().max() < 1e-12 and switch.abs().max() > 1e-3
    torch.testing.assert_close(R.sum(-1), logits.softmax(-1).amax(-1))


def test_check_balance_loss_names_a_missing_factor(capsys):
    assert_accepts(checks.check_balance_loss, ref.balance_loss, capsys)
    assert_rejects(
        checks.check_balance_loss,
        lambda probs, R: ref.balance_loss(probs, R) / probs.shape[-1],
        "factor n_experts",
    )


def _balance(f, P):
    """A balance loss n_experts · Σ f·P with f and P computed as a learner might."""
    return lambda probs, R: probs.shape[-1] * (f(probs, R) * P(probs, R)).sum()


def _slots(probs, R):
    return (R > 0).float().sum(0) / (R > 0).sum()


BALANCE_MISTAKES = {
    "f from R's weights": (
        _balance(lambda probs, R: R.mean(0), lambda probs, R: probs.mean(0)),
        "for f: f_i counts the routing slots",
    ),
    "P summed": (
        _balance(_slots, lambda probs, R: probs.sum(0)),
        "summed probs over positions for P",
    ),
    "f from the argmax": (
        _balance(
            lambda probs, R: F.one_hot(probs.argmax(-1), probs.shape[-1]).float().mean(0),
            lambda probs, R: probs.mean(0),
        ),
        "top expert (argmax)",
    ),
    "posn for n_experts": (
        lambda probs, R: probs.shape[0] * (_slots(probs, R) * probs.mean(0)).sum(),
        "number of positions",
    ),
}


@pytest.mark.parametrize("mistake", BALANCE_MISTAKES)
def test_check_balance_loss_names_the_mistake(mistake):
    learner, words = BALANCE_MISTAKES[mistake]
    assert_rejects(checks.check_balance_loss, learner, words)


def test_check_balance_loss_accepts_f_as_the_mean_of_the_choices_over_k(capsys):
    def balance_loss(probs, R):
        k = (R[0] > 0).sum()
        return probs.shape[-1] * ((R > 0).float().mean(0) / k * probs.mean(0)).sum()

    assert_accepts(checks.check_balance_loss, balance_loss, capsys)


def test_a_wrong_scalar_is_described_not_a_crash_of_the_checker():
    message = assert_rejects(
        checks.check_balance_loss, lambda probs, R: ref.balance_loss(probs, R) + 0.5, "wrong values"
    )
    assert "checking your code raised" not in message, message


def test_check_moe_flops_saved_names_a_forgotten_gate():
    def no_gate(cfg, n_experts, k):
        return 4 * cfg.d_model * cfg.d_mlp * (n_experts - k)

    assert_rejects(checks.check_moe_flops_saved, no_gate, "left out the gate")


def test_check_moe_flops_saved_wants_an_int():
    def true_division(cfg, n_experts, k):
        return ref.moe_flops_saved(cfg, n_experts, k) / 1

    assert_rejects(checks.check_moe_flops_saved, true_division, "should be an int", "use //")


ROUTE_BAD = {
    "a single tensor": (lambda logits, k: logits.softmax(-1), "pair (probs, R)"),
    "None": (lambda logits, k: None, "pair (probs, R)"),
    "NaN in R": (lambda logits, k: (logits.softmax(-1), logits * float("nan")), "NaN"),
    "an exception": (lambda logits, k: logits.topk(k + 100), "raised RuntimeError"),
}


@pytest.mark.parametrize("bad", ROUTE_BAD)
def test_check_route_survives_broken_code(bad):
    learner, diagnosis = ROUTE_BAD[bad]
    assert_rejects(checks.check_route, learner, diagnosis)


def test_check_moe_survives_a_wrong_shape_and_a_stub():
    def summed(self, x):
        return x.sum(0)

    def stub(self, x):
        raise NotImplementedError()

    for forward, diagnosis in [(summed, "shape"), (stub, "not implemented")]:
        variant = type("MixtureOfExperts", (MixtureOfExperts,), {"forward": forward})
        assert_rejects(checks.check_mixture_of_experts, variant, diagnosis)
