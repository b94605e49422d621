"""The checkers of chapter 6b's optimizer: which parameters decay, and AdamW.

AdamW is checked against torch.optim.AdamW step by step, on parameters of two groups (decayed
and not), with the learning rate changed between steps as the schedule does and a parameter
that gets no gradient, then through its state_dict.
"""

import copy
import functools

import torch

from checks._core import exercise, seeded
from checks.training._common import SMALL
from solutions import training as ref
from solutions.config import TINY
from solutions.transformer import Transformer

# --- Which parameters decay ----------------------------------------------------------------


def _kind(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    if last in ("w", "b") and ".ln" in f".{name}":
        return "LayerNorm"
    if last in ("W_E", "W_pos"):
        return "embedding"
    return "matrix" if last.startswith("W_") else "bias"


@exercise(ref.param_groups)
def check_param_groups(check, param_groups):
    cases = [(Transformer(TINY), 0.1), (Transformer(SMALL, fused=True), 0.05)]
    for model, weight_decay in cases:
        with check.case(f"{model.cfg.n_layers}-layer model, weight_decay {weight_decay}"):
            got = check.call(param_groups, model, weight_decay)
            if not isinstance(got, list | tuple) or not all(
                isinstance(g, dict) and "params" in g for g in got
            ):
                check.fail(
                    "return a list of groups, each a dict with a 'params' list and its "
                    "'weight_decay', as torch.optim.AdamW takes them."
                )
            names = {id(p): n for n, p in model.named_parameters()}
            seen, decayed = [], set()
            for group in got:
                if "weight_decay" not in group:
                    check.fail(
                        "a group has no 'weight_decay': give every group its own (else "
                        "AdamW applies its default, 0.01, to it)."
                    )
                params = list(group["params"])
                if any(id(p) not in names for p in params):
                    check.fail("a group holds something that is not one of the model's parameters.")
                seen += [names[id(p)] for p in params]
                if group["weight_decay"]:
                    if group["weight_decay"] != weight_decay:
                        check.fail(
                            f"a group decays by {group['weight_decay']}: use the "
                            f"weight_decay you are given ({weight_decay})."
                        )
                    decayed |= {names[id(p)] for p in params}
            twice = sorted({n for n in seen if seen.count(n) > 1})
            if twice:
                check.fail(f"{twice} are in more than one group: each parameter belongs to one.")
            missing = sorted(set(names.values()) - set(seen))
            if missing:
                check.fail(
                    f"these parameters are in no group, so AdamW would never train them: {missing}."
                )
            expected = {
                n for n, p in model.named_parameters() if _kind(n) in ("matrix", "embedding")
            }
            _explain_decay(check, model, decayed, expected)


def _explain_decay(check, model, decayed: set[str], expected: set[str]) -> None:
    if decayed == expected:
        return
    if decayed == {n for n, p in model.named_parameters() if p.ndim >= 2}:
        check.fail(
            "you decayed every parameter with 2 or more axes: that takes in b_Q, b_K "
            "and b_V, which are [n_heads, d_head] biases. Decide by name: the matrices "
            "are the W_* (TransformerLens's names)."
        )
    if decayed == set(dict(model.named_parameters())):
        check.fail(
            "you decayed every parameter: decay only the matrices (W_*), not the "
            "biases or LayerNorm's w and b."
        )
    wrong = sorted(decayed - expected)
    kinds = sorted({_kind(n) for n in wrong})
    if wrong:
        why = {
            "bias": "biases (their neutral value is 0, but decay adds nothing to them and "
            "nothing is gained by shrinking them)",
            "LayerNorm": "LayerNorm's w and b (decay would pull w toward 0, but its neutral "
            "value is 1)",
        }
        check.fail(
            f"you decayed {', '.join(why[k] for k in kinds)}: {wrong[:6]}"
            f"{'...' if len(wrong) > 6 else ''}. Decay only the W_* matrices."
        )
    left = sorted(expected - decayed)
    if {_kind(n) for n in left} == {"embedding"}:
        check.fail(
            "you left the embeddings W_E and W_pos undecayed: the course decays them, "
            "as nanoGPT does (they are matrices: every W_* decays)."
        )
    check.fail(
        f"these matrices are not decayed: {left[:6]}{'...' if len(left) > 6 else ''}. "
        "Every W_* decays."
    )


# --- AdamW -----------------------------------------------------------------------------------

# (lr, betas, eps, weight_decay, gradient scale): the third has eps as large as the gradients'
# root mean square, where eps under the square root or outside it differ most.
ADAM_CASES = [
    (1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0),
    (3e-2, (0.8, 0.99), 1e-8, 0.5, 10.0),
    (1e-2, (0.9, 0.999), 1e-3, 0.2, 1e-3),
]
ADAM_STEPS = 5


def _adam_params(seed: int) -> dict[str, torch.Tensor]:
    gen = seeded(seed)
    shapes = {
        "W_in": (4, 6), "W_Q": (2, 4, 3), "b_in": (6,), "w": (4,), "W_unused": (3, 2),
        "W_expert": (3, 4),
    }  # fmt: skip
    return {n: torch.randn(s, generator=gen).requires_grad_() for n, s in shapes.items()}


def _adam_groups(params: dict, weight_decay: float) -> list[dict]:
    return [
        {
            "params": [params["W_in"], params["W_Q"], params["W_unused"], params["W_expert"]],
            "weight_decay": weight_decay,
        },
        {"params": [params["b_in"], params["w"]], "weight_decay": 0.0},
    ]


def _adam_inputs(seed: int, scale: float, lr: float) -> list[tuple[dict, float]]:
    """Per step: gradients and the learning rate the schedule sets. W_unused never has a
    gradient; W_expert, like an expert of a mixture that the router does not always pick, has
    one at steps 1, 2 and 5 only."""
    gen = seeded(seed)
    shapes = {n: p.shape for n, p in _adam_params(0).items() if n != "W_unused"}
    inputs = []
    for t in range(ADAM_STEPS):
        grads = {n: torch.randn(s, generator=gen) * scale for n, s in shapes.items()}
        if t in (2, 3):
            del grads["W_expert"]
        inputs.append((grads, lr * (1 + t) / ADAM_STEPS))
    return inputs


def _adam_variant(params, inputs, default_lr, betas, eps, weight_decay, **mistake):
    """Parameters after each step of an AdamW with one mistake switched on."""
    p = {n: t.detach().clone() for n, t in params.items()}
    m = {n: torch.zeros_like(t) for n, t in p.items()}
    v = {n: torch.zeros_like(t) for n, t in p.items()}
    decays = {"W_in": 1, "W_Q": 1, "b_in": 0, "w": 0, "W_expert": 1}
    steps = dict.fromkeys(decays, 0)
    b1, b2 = betas[::-1] if mistake.get("swapped_betas") else betas
    history = []
    for step, (grads, lr) in enumerate(inputs, start=1):
        if mistake.get("defaults_lr"):
            lr = default_lr
        if mistake.get("none_as_zero"):
            grads = {n: grads.get(n, torch.zeros_like(p[n])) for n in decays}
        for n, g in grads.items():
            steps[n] += 1
            t = step if mistake.get("global_step") else steps[n]
            wd = weight_decay if decays[n] or mistake.get("decay_all") else 0.0
            if mistake.get("l2"):
                g = g + wd * p[n]
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            m_hat, v_hat = m[n], v[n]
            if not mistake.get("no_bias_correction"):
                m_hat, v_hat = m_hat / (1 - b1**t), v_hat / (1 - b2**t)
            denom = (v_hat + eps).sqrt() if mistake.get("eps_inside") else v_hat.sqrt() + eps
            decay = 1 - (1 if mistake.get("decay_without_lr") else lr) * wd
            if not mistake.get("l2") and not mistake.get("decay_after"):
                p[n] = p[n] * decay
            p[n] = p[n] - lr * m_hat / denom
            if mistake.get("decay_after"):
                p[n] = p[n] * decay
        history.append({n: t.clone() for n, t in p.items()})
    return history


ADAM_MISTAKES = {
    "left out the bias correction: divide m by 1 - beta1**t and v by 1 - beta2**t, with t "
    "the parameter's own step count, starting at 1": dict(no_bias_correction=True),
    "added the weight decay to the gradient (L2 regularisation, as torch.optim.Adam does): "
    "AdamW decays the weights directly, p *= 1 - lr * weight_decay, apart from the "
    "gradient and Adam's rescaling": dict(l2=True),
    "put eps under the square root: it is sqrt(v_hat) + eps": dict(eps_inside=True),
    "decayed by weight_decay without the learning rate: p *= 1 - lr * weight_decay": dict(
        decay_without_lr=True
    ),
    "decayed every group: read each group's own group['weight_decay'] (the biases' group "
    "has 0)": dict(decay_all=True),
    "used the learning rate AdamW was built with: read group['lr'] at every step, the "
    "schedule changes it there": dict(defaults_lr=True),
    "swapped beta1 and beta2: betas = (beta1, beta2), beta1 for m, beta2 for v": dict(
        swapped_betas=True
    ),
    "decayed the weights after the Adam update: AdamW shrinks the weights the step starts "
    "from, p *= 1 - lr * weight_decay, then subtracts lr * m_hat / (sqrt(v_hat) + eps)": dict(
        decay_after=True
    ),
    "counted the steps for the whole optimizer: W_expert had no gradient at steps 3 and 4, so "
    "it took no step there; its bias correction uses its own count, state['step'], as "
    "torch.optim.AdamW does": dict(global_step=True),
    "treated a missing gradient as zeros: at a step where p.grad is None, leave the parameter "
    "and its m, v and step count as they are (W_expert has none at steps 3 and 4)": dict(
        none_as_zero=True
    ),
}


@exercise(ref.AdamW)
def check_adam_w(check, AdamW):
    for i, (lr, betas, eps, weight_decay, scale) in enumerate(ADAM_CASES):
        label = f"lr {lr:g}, betas {betas}, eps {eps:g}, weight_decay {weight_decay:g}"
        with check.case(label + (f", gradients ×{scale:g}" if scale != 1 else "")):
            params, inputs = _adam_params(20 + i), _adam_inputs(30 + i, scale, lr)
            theirs = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
            torch_params = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
            kwargs = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            build = functools.partial(AdamW, **kwargs)
            optimizer = check.call(build, _adam_groups(theirs, weight_decay), what="AdamW(...)")
            expected = torch.optim.AdamW(_adam_groups(torch_params, weight_decay), **kwargs)
            variants = {
                mistake: _adam_variant(params, inputs, lr, betas, eps, weight_decay, **flags)
                for mistake, flags in ADAM_MISTAKES.items()
            }
            for t, (grads, step_lr) in enumerate(inputs):
                for opt, ps in ((optimizer, theirs), (expected, torch_params)):
                    _set_grads(ps, grads)
                    for group in opt.param_groups:
                        group["lr"] = step_lr
                check.call(optimizer.step, what="AdamW.step")
                expected.step()
                if not torch.equal(theirs["W_unused"], params["W_unused"]):
                    check.fail(
                        "W_unused has no gradient (p.grad is None) and must not change: "
                        "skip such parameters, decay included."
                    )
                for n in (n for n in params if n != "W_unused"):
                    check.tensor(
                        theirs[n],
                        torch_params[n],
                        what=f"{n} after step {t + 1}",
                        mistakes={m: h[t][n] for m, h in variants.items()},
                    )
            if i == 0:
                _check_adam_state_dict(check, AdamW, params, inputs, kwargs, weight_decay)


def _set_grads(params: dict, grads: dict) -> None:
    """This step's gradients; a parameter without one has p.grad None, as after
    zero_grad(set_to_none=True) and a backward pass that did not reach it."""
    for n, p in params.items():
        p.grad = grads[n].clone() if n in grads else None


def _check_adam_state_dict(check, AdamW, params, inputs, kwargs, weight_decay) -> None:
    """Two steps, its state_dict into a fresh optimizer, a third step: as three straight."""
    straight = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    resumed = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    first = AdamW(_adam_groups(straight, weight_decay), **kwargs)
    for t, (grads, _) in enumerate(inputs[:3]):
        _set_grads(straight, grads)
        first.step()
        if t == 1:
            # state_dict() hands out the live tensors: copy them before the next step.
            saved = copy.deepcopy(check.call(first.state_dict, what="AdamW.state_dict"))
            with torch.no_grad():
                for n in resumed:
                    resumed[n].copy_(straight[n])
    second = AdamW(_adam_groups(resumed, weight_decay), **kwargs)
    check.call(second.load_state_dict, saved, what="AdamW.load_state_dict")
    _set_grads(resumed, inputs[2][0])
    second.step()
    if not all(torch.equal(straight[n], resumed[n]) for n in straight):
        check.fail(
            "a fresh AdamW given the state_dict() of one that took two steps does not "
            "take the third step the same: keep m, v and the step count in "
            "self.state[p], which state_dict() saves (a checkpoint relies on it)."
        )
