"""The chapter 3 checkers accept the MLP however it is written, and name each usual mistake."""

import math

import pytest
import torch
import torch.nn.functional as F

from checks import mlp as checks
from solutions import mlp as ref
from solutions.mlp import MLP, Highway, MixtureOfExperts
from support import assert_accepts, assert_rejects

# --- gelu_new ------------------------------------------------------------------------------


def test_check_gelu_new_accepts_the_fused_kernel(capsys):
    assert_accepts(checks.check_gelu_new, lambda x: F.gelu(x, approximate="tanh"), capsys)


def test_check_gelu_new_accepts_the_formula_written_with_math(capsys):
    def gelu_new(x):
        return x / 2 * (1 + torch.tanh((2 / math.pi) ** 0.5 * (x + 0.044715 * x * x * x)))

    assert_accepts(checks.check_gelu_new, gelu_new, capsys)


GELU_MISTAKES = {
    "relu": (F.relu, "ReLU"),
    "exact": (F.gelu, "exact GELU"),
    "no cubic": (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x)), "cubic"),
}


@pytest.mark.parametrize("mistake", GELU_MISTAKES)
def test_check_gelu_new_rejects_and_names(mistake):
    learner, diagnosis = GELU_MISTAKES[mistake]
    assert_rejects(checks.check_gelu_new, learner, diagnosis)


BAD = {
    "stub": (lambda x: (_ for _ in ()).throw(NotImplementedError()), "not implemented yet"),
    "None": (lambda x: None, "returned None"),
    "wrong shape": (lambda x: x.sum(-1), "shape"),
    "NaN": (lambda x: x * float("nan"), "NaN"),
    "exception": (lambda x: x.reshape(7, -1), "raised RuntimeError"),
    "in place": (lambda x: x.mul_(0.5), "in place"),
}


@pytest.mark.parametrize("bad", BAD)
def test_check_gelu_new_survives_broken_code(bad):
    learner, diagnosis = BAD[bad]
    assert_rejects(checks.check_gelu_new, learner, diagnosis)


# --- MLP -----------------------------------------------------------------------------------


def learner_mlp(*, act="gelu_new", drop=(), where="between", swap=False):
    """An MLP written with matmuls, one mistake switched on."""
    acts = {
        "gelu_new": lambda h: F.gelu(h, approximate="tanh"),
        "exact": F.gelu,
        "relu": F.relu,
    }

    def forward(self, x):
        W_in, W_out = (self.W_out.T, self.W_in.T) if swap else (self.W_in, self.W_out)
        b_in = torch.zeros_like(self.b_in) if "b_in" in drop else self.b_in
        b_out = torch.zeros_like(self.b_out) if "b_out" in drop else self.b_out
        phi = acts[act]
        if where == "after":
            return phi((x @ W_in + b_in) @ W_out + b_out)
        if where == "before":
            return (phi(x) @ W_in + b_in) @ W_out + b_out
        return phi(x @ W_in + b_in) @ W_out + b_out

    return type("MLP", (MLP,), {"forward": forward})


def test_check_mlp_accepts_the_reference(capsys):
    assert_accepts(checks.check_mlp, MLP, capsys)


def test_check_mlp_accepts_matmul_and_the_fused_gelu(capsys):
    assert_accepts(checks.check_mlp, learner_mlp(), capsys)


def test_check_mlp_accepts_gelu_new_by_hand(capsys):
    def forward(self, x):
        return (
            ref.gelu_new(torch.einsum("bpd,dm->bpm", x, self.W_in) + self.b_in) @ self.W_out
            + self.b_out
        )

    assert_accepts(checks.check_mlp, type("MLP", (MLP,), {"forward": forward}), capsys)


MLP_MISTAKES = {
    "relu": (dict(act="relu"), "ReLU"),
    "exact gelu": (dict(act="exact"), "exact GELU"),
    "no b_in": (dict(drop=("b_in",)), "forgot the bias b_in"),
    "no b_out": (dict(drop=("b_out",)), "forgot the bias b_out"),
    "activation after W_out": (dict(where="after"), "after W_out"),
    "activation before W_in": (dict(where="before"), "before W_in"),
    "W_in and W_out confused": (dict(swap=True), "confused W_in and W_out"),
}


@pytest.mark.parametrize("mistake", MLP_MISTAKES)
def test_check_mlp_rejects_and_names(mistake):
    switches, diagnosis = MLP_MISTAKES[mistake]
    assert_rejects(checks.check_mlp, learner_mlp(**switches), diagnosis)


def test_check_mlp_rejects_the_stub_and_renamed_parameters():
    def stub(self, x):
        raise NotImplementedError()

    assert_rejects(checks.check_mlp, type("MLP", (MLP,), {"forward": stub}), "not implemented")

    class Renamed(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.W1 = torch.nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp))

    assert_rejects(checks.check_mlp, Renamed, "parameters differ")


# --- the linearised MLP --------------------------------------------------------------------


def test_check_mlp_jacobian_accepts_autograd(capsys):
    def mlp_jacobian(mlp, x):
        return torch.autograd.functional.jacobian(lambda v: mlp(v[None, None])[0, 0], x)

    assert_accepts(checks.check_mlp_jacobian, mlp_jacobian, capsys)


def test_check_mlp_jacobian_accepts_diag_written_out(capsys):
    def mlp_jacobian(mlp, x):
        h = x @ mlp.W_in + mlp.b_in
        return (mlp.W_in @ torch.diag(ref.gelu_new_grad(h)) @ mlp.W_out).T

    assert_accepts(checks.check_mlp_jacobian, mlp_jacobian, capsys)


def test_check_mlp_jacobian_names_the_exact_gelus_slope():
    def mlp_jacobian(mlp, x):
        def f(v):
            return F.gelu(v @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out

        return torch.autograd.functional.jacobian(f, x)

    assert_rejects(checks.check_mlp_jacobian, mlp_jacobian, "exact GELU's slope")


def test_check_mlp_jacobian_rejects_scaling_W_in_in_place():
    def mlp_jacobian(mlp, x):
        with torch.no_grad():
            W = mlp.W_in
            W *= ref.gelu_new_grad(x @ mlp.W_in + mlp.b_in)
            return (W @ mlp.W_out).T

    assert_rejects(checks.check_mlp_jacobian, mlp_jacobian, "weights in place (W_in)")


def test_check_mlp_jacobian_rejects_the_transpose_and_a_missing_slope():
    def transposed(mlp, x):
        return ref.mlp_jacobian(mlp, x).T

    def no_slope(mlp, x):
        return (mlp.W_in @ mlp.W_out).T

    assert_rejects(checks.check_mlp_jacobian, transposed, "transpose")
    assert_rejects(checks.check_mlp_jacobian, no_slope, "diag(φ'(h))")


# --- mixture of experts --------------------------------------------------------------------


def learner_route(*, order="before", renormalise=True, k_offset=0):
    def route(logits, k):
        k = k + k_offset
        probs = logits.softmax(-1)
        if order == "after":  # select the top-k logits, then softmax them
            top = logits.topk(k, dim=-1)
            R = torch.zeros_like(logits).scatter(-1, top.indices, top.values.softmax(-1))
            return R, R
        top = probs.topk(k, dim=-1)
        weights = top.values / top.values.sum(-1, keepdim=True) if renormalise else top.values
        return probs, torch.zeros_like(probs).scatter(-1, top.indices, weights)

    return route


def test_check_route_accepts_the_reference(capsys):
    assert_accepts(checks.check_route, learner_route(), capsys)


def test_check_route_accepts_a_mask_then_divide(capsys):
    def route(logits, k):
        probs = F.softmax(logits, dim=-1)
        threshold = probs.topk(k, dim=-1).values[:, -1:]
        kept = torch.where(probs >= threshold, probs, 0.0)
        return probs, kept / kept.sum(-1, keepdim=True)

    assert_accepts(checks.check_route, route, capsys)


ROUTE_MISTAKES = {
    "not renormalised": (dict(renormalise=False), "renormalise"),
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


def learner_moe(*, renormalise=True, k_offset=0):
    def forward(self, x):
        probs = (x @ self.W_gate).softmax(-1)
        top = probs.topk(self.k + k_offset, dim=-1)
        w = top.values / top.values.sum(-1, keepdim=True) if renormalise else top.values
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


# --- highway -------------------------------------------------------------------------------


def test_check_highway_accepts_torch_lerp(capsys):
    def forward(self, x):
        return torch.lerp(x, self.transform(x), self.gate(x))

    assert_accepts(checks.check_highway, type("Highway", (Highway,), {"forward": forward}), capsys)


def test_check_highway_rejects_a_swapped_gate():
    def forward(self, x):
        T = self.gate(x)
        return self.transform(x) * (1 - T) + x * T

    variant = type("Highway", (Highway,), {"forward": forward})
    assert_rejects(checks.check_highway, variant, "swapped the gate")


def _highway(transform, gate):
    def forward(self, x):
        T = gate(self, x)
        return transform(self, x) * T + x * (1 - T)

    return type("Highway", (Highway,), {"forward": forward})


HIGHWAY_MISTAKES = {
    "exact GELU": (
        _highway(lambda s, x: F.gelu(x @ s.W_H + s.b_H), Highway.gate),
        "exact GELU in the transform",
    ),
    "no b_H": (
        _highway(lambda s, x: ref.gelu_new(x @ s.W_H), Highway.gate),
        "forgot the bias b_H",
    ),
    "no b_T": (
        _highway(Highway.transform, lambda s, x: torch.sigmoid(x @ s.W_T)),
        "forgot the bias b_T",
    ),
}


@pytest.mark.parametrize("mistake", HIGHWAY_MISTAKES)
def test_check_highway_names_the_mistake(mistake):
    variant, words = HIGHWAY_MISTAKES[mistake]
    assert_rejects(checks.check_highway, variant, words)


def test_every_checker_accepts_its_reference(capsys):
    for name in checks.__all__:
        checker = getattr(checks, name)
        reference = {
            "check_gelu_new": ref.gelu_new,
            "check_mlp": MLP,
            "check_mlp_jacobian": ref.mlp_jacobian,
            "check_route": ref.route,
            "check_mixture_of_experts": MixtureOfExperts,
            "check_balance_loss": ref.balance_loss,
            "check_moe_flops_saved": ref.moe_flops_saved,
            "check_highway": Highway,
        }[name]
        assert_accepts(checker, reference, capsys)


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
