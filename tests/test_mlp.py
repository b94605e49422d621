"""The chapter 3 checkers of gelu_new, the MLP, gelu_new's slope, the MLP's Jacobian and the
highway layer accept each however it is written, and name each usual mistake (ReLU or the exact
GELU, a missing bias, the activation in the wrong place, W_in and W_out confused, a slip of the
product or chain rule, a swapped gate); and every chapter 3 checker accepts its reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from checks import mlp as checks
from checks.mlp._common import exact_gelu_grad
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


# --- gelu_new's slope ------------------------------------------------------------------------

C, A = math.sqrt(2 / math.pi), 0.044715


def test_check_gelu_new_grad_accepts_autograd_through_the_fused_kernel(capsys):
    def gelu_new_grad(x):
        x = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(F.gelu(x, approximate="tanh").sum(), x)
        return grad

    assert_accepts(checks.check_gelu_new_grad, gelu_new_grad, capsys)


def test_check_gelu_new_grad_accepts_torch_func_and_sech_squared(capsys):
    def by_vmap(x):
        return torch.vmap(torch.func.grad(ref.gelu_new))(x.flatten()).view_as(x)

    def by_sech(x):
        u = C * (x + A * x**3)
        return 0.5 * (1 + torch.tanh(u)) + 0.5 * x * C * (1 + 3 * A * x**2) / torch.cosh(u) ** 2

    assert_accepts(checks.check_gelu_new_grad, by_vmap, capsys)
    assert_accepts(checks.check_gelu_new_grad, by_sech, capsys)


def _slope(*, first=True, second=True, dtanh="sech2", inner="full", half=0.5):
    """gelu_new's slope by the product rule, term by term, one slip switched on."""

    def gelu_new_grad(x):
        t = torch.tanh(C * (x + A * x**3))
        d = {"sech2": 1 - t**2, "tanh2": t**2, "1-tanh": 1 - t}[dtanh]
        du = {"full": C * (1 + 3 * A * x**2), "none": 1, "no 3": C * (1 + A * x**2)}[inner]
        return first * 0.5 * (1 + t) + second * half * x * d * du

    return gelu_new_grad


GRAD_MISTAKES = {
    "exact GELU": (exact_gelu_grad, "slope of the exact GELU"),
    "no second term": (_slope(second=False), "only the product rule's first term"),
    "no first term": (_slope(first=False), "only the product rule's second term"),
    "tanh squared": (_slope(dtanh="tanh2"), "tanh'(u) as tanh²(u)"),
    "1 - tanh": (_slope(dtanh="1-tanh"), "tanh'(u) as 1 - tanh(u)"),
    "no inner derivative": (_slope(inner="none"), "inner derivative"),
    "no factor 3": (_slope(inner="no 3"), "the power's 3"),
    "no half": (_slope(half=1.0), "dropped the 0.5"),
    "gelu_new itself": (ref.gelu_new, "not its slope"),
}


@pytest.mark.parametrize("mistake", GRAD_MISTAKES)
def test_check_gelu_new_grad_rejects_and_names(mistake):
    learner, diagnosis = GRAD_MISTAKES[mistake]
    assert_rejects(checks.check_gelu_new_grad, learner, diagnosis)


def test_check_gelu_new_grad_reports_tanh_by_hand_overflowing_at_large_x():
    def gelu_new_grad(x):
        e = torch.exp(2 * C * (x + A * x**3))
        t = (e - 1) / (e + 1)  # inf / inf at large x
        return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * C * (1 + 3 * A * x**2)

    assert_rejects(checks.check_gelu_new_grad, gelu_new_grad, "large |x|", "NaN")


@pytest.mark.parametrize("bad", BAD)
def test_check_gelu_new_grad_survives_broken_code(bad):
    learner, diagnosis = BAD[bad]
    assert_rejects(checks.check_gelu_new_grad, learner, diagnosis)


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
            "check_gelu_new_grad": ref.gelu_new_grad,
            "check_mlp_jacobian": ref.mlp_jacobian,
            "check_route": ref.route,
            "check_mixture_of_experts": MixtureOfExperts,
            "check_load_balance": ref.load_balance,
            "check_balance_loss": ref.balance_loss,
            "check_moe_flops_saved": ref.moe_flops_saved,
            "check_highway": Highway,
        }[name]
        assert_accepts(checker, reference, capsys)
