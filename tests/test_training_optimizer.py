"""The chapter 6b optimizer checkers accept the parameter groups and AdamW however they are
written, and name each usual mistake: Adam without bias correction, L2 for decoupled decay, eps
under the square root, decay on the wrong parameters."""

import pytest
import torch

from checks import training as checks
from solutions import training as ref
from support import assert_accepts, assert_rejects

# --- Which parameters decay ----------------------------------------------------------------


def test_param_groups_accepts_the_reference_and_other_groupings(capsys):
    assert_accepts(checks.check_param_groups, ref.param_groups, capsys)

    def three_groups_in_another_order(model, weight_decay):
        named = dict(model.named_parameters())
        embeddings = [p for n, p in named.items() if n.endswith(("W_E", "W_pos"))]
        matrices = [p for n, p in named.items() if ".W_" in n and not n.endswith(("W_E", "W_pos"))]
        rest = [p for n, p in named.items() if "W_" not in n]
        return [
            {"params": rest, "weight_decay": 0.0},
            {"params": matrices, "weight_decay": weight_decay},
            {"params": embeddings, "weight_decay": weight_decay},
        ]

    assert_accepts(checks.check_param_groups, three_groups_in_another_order, capsys)


def groups(decays, keep=lambda n, p: True):
    def param_groups(model, weight_decay):
        named = [(n, p) for n, p in model.named_parameters() if keep(n, p)]
        return [
            {"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
        ]

    return param_groups


def last(name):
    return name.rsplit(".", 1)[-1]


@pytest.mark.parametrize(
    "learner, message",
    [
        (groups(lambda n, p: p.ndim >= 2), "2 or more axes"),
        (groups(lambda n, p: True), "decayed every parameter"),
        (groups(lambda n, p: last(n).startswith(("W_", "b_"))), "biases"),
        (groups(lambda n, p: last(n).startswith("W_") or last(n) == "w"), "LayerNorm's w"),
        (
            groups(lambda n, p: ".W_" in n and not n.endswith(("E", "pos"))),
            "embeddings W_E and W_pos",
        ),
        (groups(lambda n, p: "W_" in n, keep=lambda n, p: "ln" not in n), "in no group"),
    ],
    ids=["ndim", "everything", "biases", "layernorm", "no-embeddings", "left-out"],
)
def test_param_groups_rejects_and_names(learner, message):
    assert_rejects(checks.check_param_groups, learner, message)


def test_param_groups_wants_each_group_s_weight_decay():
    def no_key(model, weight_decay):
        return [{"params": list(model.parameters())}]

    assert_rejects(checks.check_param_groups, no_key, "has no 'weight_decay'")


# --- AdamW -------------------------------------------------------------------------------------


def adam(
    *,
    bias_correction=True,
    l2=False,
    eps_inside=False,
    decay_lr=True,
    group_decay=True,
    group_lr=True,
    swap=False,
    state_outside=False,
    skip_none=True,
    decay_after=False,
    global_step=False,
    none_as_zero=False,
):
    """An AdamW written the way a learner might, one mistake switched on."""

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr = group["lr"] if group_lr else self.defaults["lr"]
            beta1, beta2 = group["betas"][::-1] if swap else group["betas"]
            wd = group["weight_decay"] if group_decay else self.defaults["weight_decay"]
            for p in group["params"]:
                grad = p.grad
                if grad is None and none_as_zero:
                    grad = torch.zeros_like(p)
                if grad is None:
                    if skip_none:
                        continue
                    p.mul_(1 - lr * wd)
                    continue
                if state_outside:
                    store = self.__dict__.setdefault("mine", {})
                    state = store.setdefault(p, {})
                else:
                    state = self.state[p]
                if "t" not in state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t = self.__dict__.get("steps_taken", 0) + 1 if global_step else state["t"]
                g = grad + wd * p if l2 else grad
                state["m"].lerp_(g, 1 - beta1)
                state["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m, v = state["m"], state["v"]
                if bias_correction:
                    m = m / (1 - beta1**t)
                    v = v / (1 - beta2**t)
                denom = (v + group["eps"]).sqrt() if eps_inside else v.sqrt() + group["eps"]
                if not l2 and not decay_after:
                    p.mul_(1 - (lr if decay_lr else 1) * wd)
                p.addcdiv_(m, denom, value=-lr)
                if decay_after:
                    p.mul_(1 - lr * wd)
        self.steps_taken = self.__dict__.get("steps_taken", 0) + 1

    return type("AdamW", (ref.AdamW,), {"step": step})


def test_adam_w_accepts_the_reference_and_another_writing(capsys):
    assert_accepts(checks.check_adam_w, ref.AdamW, capsys)
    assert_accepts(checks.check_adam_w, adam(), capsys)


def test_adam_w_accepts_plain_tensor_arithmetic_and_a_tensor_step_count(capsys):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is not None:
                    s = self.state[p]
                    s["n"] = s.get("n", torch.tensor(0.0)) + 1
                    s["m"] = b1 * s.get("m", 0) + (1 - b1) * p.grad
                    s["v"] = b2 * s.get("v", 0) + (1 - b2) * p.grad**2
                    m_hat, v_hat = s["m"] / (1 - b1 ** s["n"]), s["v"] / (1 - b2 ** s["n"])
                    update = m_hat / (torch.sqrt(v_hat) + group["eps"])
                    p -= group["lr"] * group["weight_decay"] * p
                    p -= group["lr"] * update

    assert_accepts(checks.check_adam_w, type("AdamW", (ref.AdamW,), {"step": step}), capsys)


ADAM_MISTAKES = {
    "no bias correction": (dict(bias_correction=False), "left out the bias correction"),
    "L2 instead of decoupled": (dict(l2=True), "added the weight decay to the gradient"),
    "eps under the square root": (dict(eps_inside=True), "put eps under the square root"),
    "decay without lr": (dict(decay_lr=False), "without the learning rate"),
    "decay in every group": (dict(group_decay=False), "decayed every group"),
    "lr from the defaults": (dict(group_lr=False), "read group['lr'] at every step"),
    "betas swapped": (dict(swap=True), "swapped beta1 and beta2"),
    "state outside self.state": (dict(state_outside=True), "self.state[p]"),
    "decays parameters without a gradient": (dict(skip_none=False), "p.grad is None"),
    "decay after the update": (dict(decay_after=True), "decayed the weights after the Adam"),
    "one step count for all": (dict(global_step=True), "its own count, state['step']"),
    "a missing gradient as zeros": (dict(none_as_zero=True), "p.grad is None"),
}


@pytest.mark.parametrize("mistake", ADAM_MISTAKES)
def test_adam_w_rejects_and_names(mistake):
    switches, message = ADAM_MISTAKES[mistake]
    assert_rejects(checks.check_adam_w, adam(**switches), message)


def test_adam_w_rejects_a_step_that_crashes_on_a_missing_gradient():
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.sub_(group["lr"] * p.grad.sign())

    learner = type("AdamW", (ref.AdamW,), {"step": step})
    assert_rejects(checks.check_adam_w, learner, "raised AttributeError", "p.grad.sign()")


def test_adam_w_rejects_the_stub():
    def stub(self):
        raise NotImplementedError()

    learner = type("AdamW", (ref.AdamW,), {"step": stub})
    assert_rejects(checks.check_adam_w, learner, "not implemented yet")
