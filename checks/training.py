"""Checkers for chapter 6's training loop (solutions/training.py).

The optimizer is checked against torch.optim.AdamW step by step, on parameters of two groups
(decayed and not), with the learning rate changed between steps as the schedule does and a
parameter that gets no gradient; clipping against torch.nn.utils.clip_grad_norm_; the
checkpoint functions by resuming a stopped run, which must end where a straight run ends.
Where a result matches a usual mistake (Adam without bias correction, L2 in place of decoupled
decay, eps under the square root, a schedule off by one, clipping each parameter alone, a
resume that forgets the optimizer or the generator), the verdict names it.
"""

import copy
import functools
import math
import tempfile
from pathlib import Path

import torch
import torch._dynamo  # noqa: F401  (torch.optim's first step imports it: seconds, paid here once)

from checks._core import exercise, seeded
from course.config import TINY
from solutions import training as ref
from solutions.transformer import Transformer

__all__ = [
    "check_random_windows",
    "check_param_groups",
    "check_adam_w",
    "check_learning_rate",
    "check_clip_grad_norm",
    "check_train_step",
    "check_evaluate",
    "check_save_checkpoint",
    "check_load_checkpoint",
]

SMALL = TINY.but(n_ctx=8, n_layers=1)


def _as_float(check, value, what: str) -> float:
    """A learner's number as a float: a Python or NumPy number, or a 0-d tensor."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    check.fail(f"the {what} should be a number, got {type(value).__name__}: {value!r:.80}.")


def _number(check, got: float, expected: float, what: str, mistakes: dict[str, float]) -> None:
    as64 = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    named = {mistake: as64(value) for mistake, value in mistakes.items()}
    check.tensor(as64(got), as64(expected), what=what, mistakes=named, rtol=1e-5, atol=1e-9)


# --- The data loader -----------------------------------------------------------------------


@exercise(ref.random_windows)
def check_random_windows(check, random_windows):
    for i, (n, batch, n_ctx) in enumerate([(200, 4, 8), (50, 7, 5), (30, 2, 27), (1000, 16, 3)]):
        with check.case(f"{n} tokens, batch {batch}, n_ctx {n_ctx}"):
            # Tokens 0, 1, 2...: a window is consecutive exactly when it counts up by one.
            tokens = torch.arange(n) + 3
            got = check.call(random_windows, tokens, batch, n_ctx, seeded(10 + i))
            again = check.call(random_windows, tokens, batch, n_ctx, seeded(10 + i))
            if all(isinstance(x, torch.Tensor) for x in (got, again)) and not torch.equal(
                again, got
            ):
                check.fail(
                    "two calls with generators of the same seed gave different windows: "
                    "draw the starts with the `generator` you are given "
                    "(torch.randint(..., generator=generator))."
                )
            expected = ref.random_windows(tokens, batch, n_ctx, seeded(10 + i))
            shapes = [
                (
                    (batch, n_ctx),
                    "cut windows of n_ctx tokens: it takes n_ctx + 1, as "
                    "the last of them is only ever a target",
                )
            ]
            if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                steps = got[:, 1:] - got[:, :-1]
                if not (steps == 1).all():
                    check.fail(
                        "a window is not a run of consecutive tokens: slice it, "
                        "tokens[start : start + n_ctx + 1]."
                    )
            g = seeded(10 + i)
            late = torch.randint(0, n - n_ctx - 1, (batch,), generator=g).tolist()
            mistakes = {
                "drew starts below len(tokens) - n_ctx - 1: the last window that fits starts "
                "at len(tokens) - n_ctx - 1, so draw below len(tokens) - n_ctx": torch.stack(
                    [tokens[s : s + n_ctx + 1] for s in late]
                )
            }
            check.tensor(got, expected, what="windows", mistakes=mistakes, shapes=shapes)


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
    shapes = {"W_in": (4, 6), "W_Q": (2, 4, 3), "b_in": (6,), "w": (4,), "W_unused": (3, 2)}
    return {n: torch.randn(s, generator=gen).requires_grad_() for n, s in shapes.items()}


def _adam_groups(params: dict, weight_decay: float) -> list[dict]:
    return [
        {
            "params": [params["W_in"], params["W_Q"], params["W_unused"]],
            "weight_decay": weight_decay,
        },
        {"params": [params["b_in"], params["w"]], "weight_decay": 0.0},
    ]


def _adam_inputs(seed: int, scale: float, lr: float) -> list[tuple[dict, float]]:
    """Per step: gradients (none for W_unused) and the learning rate the schedule sets."""
    gen = seeded(seed)
    shapes = {n: p.shape for n, p in _adam_params(0).items() if n != "W_unused"}
    return [
        (
            {n: torch.randn(s, generator=gen) * scale for n, s in shapes.items()},
            lr * (1 + t) / ADAM_STEPS,
        )
        for t in range(ADAM_STEPS)
    ]


def _adam_variant(params, inputs, default_lr, betas, eps, weight_decay, **mistake):
    """Parameters after each step of an AdamW with one mistake switched on."""
    p = {n: t.detach().clone() for n, t in params.items()}
    m = {n: torch.zeros_like(t) for n, t in p.items()}
    v = {n: torch.zeros_like(t) for n, t in p.items()}
    decays = {n: g for n, g in zip(["W_in", "W_Q", "b_in", "w"], [1, 1, 0, 0], strict=True)}
    b1, b2 = betas[::-1] if mistake.get("swapped_betas") else betas
    history = []
    for t, (grads, lr) in enumerate(inputs, start=1):
        if mistake.get("defaults_lr"):
            lr = default_lr
        for n, g in grads.items():
            wd = weight_decay if decays[n] or mistake.get("decay_all") else 0.0
            if mistake.get("l2"):
                g = g + wd * p[n]
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            m_hat, v_hat = m[n], v[n]
            if not mistake.get("no_bias_correction"):
                m_hat, v_hat = m_hat / (1 - b1**t), v_hat / (1 - b2**t)
            denom = (v_hat + eps).sqrt() if mistake.get("eps_inside") else v_hat.sqrt() + eps
            if not mistake.get("l2"):
                p[n] = p[n] * (1 - (1 if mistake.get("decay_without_lr") else lr) * wd)
            p[n] = p[n] - lr * m_hat / denom
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
                    for n, g in grads.items():
                        ps[n].grad = g.clone()
                    for group in opt.param_groups:
                        group["lr"] = step_lr
                check.call(optimizer.step, what="AdamW.step")
                expected.step()
                if not torch.equal(theirs["W_unused"], params["W_unused"]):
                    check.fail(
                        "W_unused has no gradient (p.grad is None) and must not change: "
                        "skip such parameters, decay included."
                    )
                for n in grads:
                    check.tensor(
                        theirs[n],
                        torch_params[n],
                        what=f"{n} after step {t + 1}",
                        mistakes={m: h[t][n] for m, h in variants.items()},
                    )
            if i == 0:
                _check_adam_state_dict(check, AdamW, params, inputs, kwargs, weight_decay)


def _check_adam_state_dict(check, AdamW, params, inputs, kwargs, weight_decay) -> None:
    """Two steps, its state_dict into a fresh optimizer, a third step: as three straight."""
    straight = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    resumed = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    first = AdamW(_adam_groups(straight, weight_decay), **kwargs)
    for t, (grads, _) in enumerate(inputs[:3]):
        for n, g in grads.items():
            straight[n].grad = g.clone()
        first.step()
        if t == 1:
            # state_dict() hands out the live tensors: copy them before the next step.
            saved = copy.deepcopy(check.call(first.state_dict, what="AdamW.state_dict"))
            with torch.no_grad():
                for n in resumed:
                    resumed[n].copy_(straight[n])
    second = AdamW(_adam_groups(resumed, weight_decay), **kwargs)
    check.call(second.load_state_dict, saved, what="AdamW.load_state_dict")
    for n, g in inputs[2][0].items():
        resumed[n].grad = g.clone()
    second.step()
    if not all(torch.equal(straight[n], resumed[n]) for n in straight):
        check.fail(
            "a fresh AdamW given the state_dict() of one that took two steps does not "
            "take the third step the same: keep m, v and the step count in "
            "self.state[p], which state_dict() saves (a checkpoint relies on it)."
        )


# --- The schedule ----------------------------------------------------------------------------

SCHEDULES = [
    ref.TrainConfig(max_steps=100, warmup_steps=10, max_lr=1e-3, min_lr=1e-4),
    ref.TrainConfig(max_steps=40, warmup_steps=1, max_lr=3e-3, min_lr=3e-4),
    ref.TrainConfig(max_steps=25, warmup_steps=7, max_lr=6e-4, min_lr=6e-5),
]


def _cosine(step, t, *, start=None, to=None, clamp=True, shape="cosine"):
    start = t.warmup_steps if start is None else start
    low = t.min_lr if to is None else to
    progress = (step - start) / max(1, t.max_steps - start)
    progress = min(1.0, progress) if clamp else progress
    if shape == "linear":
        return t.max_lr - (t.max_lr - low) * progress
    return low + 0.5 * (t.max_lr - low) * (1 + math.cos(math.pi * progress))


def _warm(step, t, rest, off_by_one=False):
    if step < t.warmup_steps:
        return t.max_lr * (step if off_by_one else step + 1) / t.warmup_steps
    return rest(step, t)


SCHEDULE_MISTAKES = {
    "warmed up off by one: step 0 (the first) trains at max_lr / warmup_steps, so the "
    "warm-up is max_lr * (step + 1) / warmup_steps, and never trains at 0": lambda s, t: _warm(
        s, t, _cosine, off_by_one=True
    ),
    "left out the warm-up: the learning rate climbs linearly from max_lr / warmup_steps to "
    "max_lr over the first warmup_steps steps": lambda s, t: _cosine(s, t, start=0),
    "let the cosine fall to 0: it ends at min_lr": lambda s, t: _warm(
        s, t, lambda s, t: _cosine(s, t, to=0.0)
    ),
    "ran the cosine over all of max_steps: it starts after the warm-up, with progress "
    "(step - warmup_steps) / (max_steps - warmup_steps)": lambda s, t: _warm(
        s, t, lambda s, t: _cosine(s, t, start=0)
    ),
    "let the cosine go on past max_steps, where it climbs back: stay at min_lr after "
    "max_steps": lambda s, t: _warm(s, t, lambda s, t: _cosine(s, t, clamp=False)),
    "decayed linearly: from max_lr to min_lr along half a cosine, "
    "min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2": lambda s, t: _warm(
        s, t, lambda s, t: _cosine(s, t, shape="linear")
    ),
}


@exercise(ref.learning_rate)
def check_learning_rate(check, learning_rate):
    for t in SCHEDULES:
        with check.case(
            f"max_steps {t.max_steps}, warmup_steps {t.warmup_steps}, max_lr {t.max_lr:g}, "
            f"min_lr {t.min_lr:g}"
        ):
            steps = range(t.max_steps + 10)
            got = [
                _as_float(check, check.call(learning_rate, s, t), "learning rate") for s in steps
            ]
            expected = [ref.learning_rate(s, t) for s in steps]
            as64 = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
            mistakes = {m: as64([f(s, t) for s in steps]) for m, f in SCHEDULE_MISTAKES.items()}
            check.tensor(
                as64(got),
                as64(expected),
                what="learning rates at steps 0, 1, 2...",
                mistakes=mistakes,
                rtol=1e-6,
                atol=1e-12,
            )


# --- Clipping ----------------------------------------------------------------------------------

# (gradient scales, max_norm): clipped, then left alone (the norm is below max_norm), then one
# parameter far larger than the rest, where clipping each alone differs most.
CLIP_CASES = [((1.0, 1.0, 1.0), 1.0), ((0.01, 0.02, 0.01), 1.0), ((10.0, 0.1, 0.1), 0.5)]


def _clipped(grads, max_norm, *, per_param=False, always=False, norm="global"):
    norms = torch.stack([g.norm() for g in grads])
    total = {"global": norms.norm(), "sum": norms.sum(), "squared": norms.pow(2).sum()}[norm]
    out = []
    for g, own in zip(grads, norms, strict=True):
        scale = max_norm / ((own if per_param else total) + 1e-6)
        out.append(g * (scale if always else scale.clamp(max=1.0)))
    return torch.cat([g.flatten() for g in out])


@exercise(ref.clip_grad_norm)
def check_clip_grad_norm(check, clip_grad_norm):
    for i, (scales, max_norm) in enumerate(CLIP_CASES):
        with check.case(f"gradients ×{scales}, max_norm {max_norm:g}"):
            gen = seeded(40 + i)
            shapes = [(4, 5), (5,), (3, 2, 2)]
            grads = [torch.randn(s, generator=gen) * k for s, k in zip(shapes, scales, strict=True)]
            params = [torch.zeros(s, requires_grad=True) for s in shapes + [(2,)]]
            for p, g in zip(params, grads, strict=False):
                p.grad = g.clone()  # the last parameter has no gradient
            torch_params = [p.detach().clone().requires_grad_() for p in params]
            for p, g in zip(torch_params, grads, strict=False):
                p.grad = g.clone()
            # A generator, as model.parameters() is: it can be walked through only once.
            total = check.call(clip_grad_norm, (p for p in params), max_norm)
            expected_total = torch.nn.utils.clip_grad_norm_(torch_params, max_norm)
            if params[-1].grad is not None:
                check.fail("a parameter without a gradient got one: skip p.grad is None.")
            got = torch.cat([p.grad.flatten() for p in params[:-1]])
            expected = torch.cat([p.grad.flatten() for p in torch_params[:-1]])
            unchanged = torch.cat([g.flatten() for g in grads])
            mistakes = {
                "clipped each parameter's gradient by its own norm: clipping scales all "
                "gradients by one factor, from their global norm (every entry as one vector), "
                "so that the update keeps its direction": _clipped(grads, max_norm, per_param=True),
                "scaled the gradients to max_norm even when their norm was below it: the "
                "factor is min(1, max_norm / (norm + 1e-6))": _clipped(
                    grads, max_norm, always=True
                ),
                "added up the parameters' norms: the global norm is the square root of the sum "
                "of their squares": _clipped(grads, max_norm, norm="sum"),
                "left out the square root: the global norm is sqrt(sum of squared norms)": (
                    _clipped(grads, max_norm, norm="squared")
                ),
            }
            if not torch.allclose(unchanged, expected):
                mistakes[
                    "left the gradients as they were: scale each p.grad in place "
                    "(p.grad.mul_(factor)). If you loop over `parameters` twice, make a list of "
                    "it first: model.parameters() is a generator, empty the second time"
                ] = unchanged
            check.tensor(got, expected, what="clipped gradients", mistakes=mistakes, rtol=1e-5)
            got_total = _as_float(check, total, "returned norm")
            _number(
                check,
                got_total,
                expected_total.item(),
                "returned norm",
                {
                    "returned the norm after clipping: return it before, as "
                    "clip_grad_norm_ does (it tells how large the gradients were)": min(
                        expected_total.item(), max_norm
                    )
                },
            )


# --- One step ----------------------------------------------------------------------------------


def _model(seed: int) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(SMALL)


def _optimizer(model, lr=0.1):
    return ref.AdamW(ref.param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))


def _step_variant(model, optimizer, batch, lr, grad_clip, *, zero=True, clip=True, groups=None):
    for group in optimizer.param_groups[:groups]:
        group["lr"] = lr
    loss = ref.window_loss(model, batch)
    if zero:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        ref.clip_grad_norm(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


STEP_MISTAKES = {
    "did not zero the gradients: backward() adds to p.grad, so without "
    "optimizer.zero_grad() each step also takes the gradients of the steps before": dict(
        zero=False
    ),
    "did not clip the gradients, between backward() and optimizer.step()": dict(clip=False),
    "set the learning rate of the first group only: set group['lr'] in every group of "
    "optimizer.param_groups": dict(groups=1),
    "did not set the learning rate: set group['lr'] = lr in every group of "
    "optimizer.param_groups before the step": dict(groups=0),
}


@exercise(ref.train_step)
def check_train_step(check, train_step):
    for i, (lrs, grad_clip) in enumerate([((3e-3, 1e-2, 2e-3), 0.5), ((1e-3, 2e-3), 100.0)]):
        with check.case(f"{len(lrs)} steps at lr {lrs}, grad_clip {grad_clip:g}"):
            gen = seeded(50 + i)
            batches = [
                torch.randint(SMALL.d_vocab, (3, SMALL.n_ctx + 1), generator=gen) for _ in lrs
            ]
            theirs = _model(60 + i)
            expected = _model(60 + i)
            variants = {m: _model(60 + i) for m in STEP_MISTAKES}
            optimizers = {
                "theirs": _optimizer(theirs),
                "expected": _optimizer(expected),
                **{m: _optimizer(v) for m, v in variants.items()},
            }
            for t, (batch, lr) in enumerate(zip(batches, lrs, strict=True)):
                got = check.call(train_step, theirs, optimizers["theirs"], batch, lr, grad_clip)
                loss = ref.train_step(expected, optimizers["expected"], batch, lr, grad_clip)
                for m, flags in STEP_MISTAKES.items():
                    _step_variant(variants[m], optimizers[m], batch, lr, grad_clip, **flags)
                if isinstance(got, torch.Tensor):
                    check.fail(
                        "return loss.item(), a Python float: a tensor keeps its whole "
                        "graph alive in the log."
                    )
                _number(check, _as_float(check, got, "loss"), loss, f"loss at step {t + 1}", {})
                flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
                check.tensor(
                    flat(theirs),
                    flat(expected),
                    what=f"parameters after step {t + 1}",
                    mistakes={m: flat(v) for m, v in variants.items()},
                    rtol=1e-5,
                    atol=1e-7,
                )


# --- Evaluation --------------------------------------------------------------------------------


class _ModeShows(Transformer):
    """A model whose output depends on its mode, as one with dropout would: evaluating it in
    training mode gives another loss."""

    def forward(self, tokens):
        logits = super().forward(tokens)
        return logits * 1.5 if self.training else logits


@exercise(ref.evaluate)
def check_evaluate(check, evaluate):
    for i, (n_windows, batch_size, training) in enumerate(
        [(10, 4, True), (3, 16, True), (8, 8, False)]
    ):
        with check.case(
            f"{n_windows} windows in batches of {batch_size}, model in "
            f"{'training' if training else 'eval'} mode"
        ):
            torch.manual_seed(70 + i)
            model = _ModeShows(SMALL).train(training)
            gen = seeded(80 + i)
            windows = torch.randint(SMALL.d_vocab, (n_windows, SMALL.n_ctx + 1), generator=gen)
            grad_modes = []
            hook = model.register_forward_hook(
                lambda *_, modes=grad_modes: modes.append(torch.is_grad_enabled())
            )
            try:
                got = check.call(evaluate, model, windows, batch_size)
            finally:
                hook.remove()
            if model.training != training:
                mode = "training" if training else "eval"
                check.fail(
                    f"the model was in {mode} mode and came back in the other: put back "
                    "the mode it had (model.train(was_training)), as training goes on "
                    "after an evaluation."
                )
            if isinstance(got, torch.Tensor) and got.requires_grad or any(grad_modes):
                check.fail(
                    "the model ran with gradients on: evaluate under torch.no_grad() "
                    "(@torch.no_grad() above the def), which builds no graph."
                )
            with torch.no_grad():
                model.eval()
                losses = [
                    ref.window_loss(model, windows[j : j + batch_size]).item()
                    for j in range(0, n_windows, batch_size)
                ]
                model.train()
                in_training = ref.window_loss(model, windows).item()
            model.train(training)
            expected = ref.evaluate(model, windows, batch_size)
            mistakes = {"evaluated in training mode: call model.eval() first": in_training}
            if len(losses) > 1:
                mistakes[
                    "averaged the batches' losses: the last batch is smaller, so weight "
                    "each by its number of windows"
                ] = sum(losses) / len(losses)
                mistakes["scored only the first batch"] = losses[0]
            _number(check, _as_float(check, got, "loss"), expected, "loss", mistakes)


# --- Checkpoints -------------------------------------------------------------------------------

RESUME = ref.TrainConfig(max_steps=6, warmup_steps=2, max_lr=1e-2, min_lr=1e-3, batch_size=3)
STOP = 3
TOKENS = torch.randint(SMALL.d_vocab, (400,), generator=seeded(90))


def _run(model, optimizer, generator, start: int, stop: int) -> None:
    for step in range(start, stop):
        batch = ref.random_windows(TOKENS, RESUME.batch_size, SMALL.n_ctx, generator)
        ref.train_step(model, optimizer, batch, ref.learning_rate(step, RESUME), 1.0)


def _fresh(seed: int):
    model = _model(seed)
    optimizer = ref.AdamW(ref.param_groups(model, 0.1), betas=(0.9, 0.95))
    return model, optimizer, torch.Generator().manual_seed(RESUME.seed)


def _resume(check, save, load, who: str) -> None:
    """Stop a run at STOP, save, load into a fresh model (other weights, a fresh optimizer,
    the generator seeded anew) and go on: it must end where a straight run ends."""
    straight = _fresh(100)
    _run(*straight, 0, RESUME.max_steps)
    stopped = _fresh(100)
    _run(*stopped, 0, STOP)
    log = [{"step": s} for s in range(1, STOP + 1)]
    resumed = _fresh(101)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        if who == "save":
            check.call(lambda: save(path, *stopped, STOP, log=log), what="save_checkpoint")
            if not path.exists():
                check.fail("nothing was written at `path`: torch.save(state, path).")
            keys = torch.load(path, weights_only=False)
            need = {"model", "optimizer", "generator", "step"}
            if not isinstance(keys, dict) or not need <= set(keys):
                found = sorted(keys) if isinstance(keys, dict) else type(keys).__name__
                check.fail(
                    f"the checkpoint should be a dict with the keys {sorted(need)} "
                    f"(load_checkpoint reads them), found {found}."
                )
            try:
                state = ref.load_checkpoint(path, *resumed)
            except Exception as error:
                check.fail(
                    f"load_checkpoint could not read your checkpoint: "
                    f"{type(error).__name__}: {error}. Save model.state_dict(), "
                    "optimizer.state_dict() and generator.get_state()."
                )
        else:
            ref.save_checkpoint(path, *stopped, STOP, log=log)
            state = check.call(lambda: load(path, *resumed), what="load_checkpoint")
            if not isinstance(state, dict) or "step" not in state:
                check.fail(
                    "return the checkpoint, a dict whose 'step' is where the run "
                    "stopped (and with the extras, such as 'log')."
                )
    verb = "saved" if who == "save" else "restored"
    model, optimizer, generator = resumed
    if not all(
        torch.equal(a, b) for a, b in zip(model.parameters(), stopped[0].parameters(), strict=True)
    ):
        check.fail(
            f"the model's weights were not {verb}: model.state_dict() "
            f"{'into the checkpoint' if who == 'save' else 'back with load_state_dict'}."
        )
    theirs, ours = optimizer.state_dict()["state"], stopped[1].state_dict()["state"]
    if len(theirs) != len(ours) or any(
        theirs[k]["step"] != ours[k]["step"] or not torch.equal(theirs[k]["m"], ours[k]["m"])
        for k in ours
    ):
        check.fail(
            f"the optimizer's state was not {verb}: AdamW's m, v and step count per "
            "parameter. Without them the resumed AdamW starts afresh (m = v = 0, bias "
            "correction from step 1) and takes other steps than the run it resumes."
        )
    if not torch.equal(generator.get_state(), stopped[2].get_state()):
        check.fail(
            f"the generator's state was not {verb}: generator.get_state() and "
            "set_state(...). Seeded anew, the resumed run draws the batches the run "
            "already trained on, not the ones it would have drawn next."
        )
    if state.get("step") != STOP:
        check.fail(
            f"the checkpoint's step is {state.get('step')!r}, the run stopped after "
            f"step {STOP}: the schedule goes on from there."
        )
    if state.get("log") != log:
        check.fail(
            "the extra keyword arguments (here log=...) were not kept in the "
            "checkpoint: the loop saves its log and best weights that way."
        )
    _run(*resumed, state["step"], RESUME.max_steps)
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    check.tensor(
        flat(resumed[0]), flat(straight[0]), what="parameters at the end of the resumed run"
    )


@exercise(ref.save_checkpoint)
def check_save_checkpoint(check, save_checkpoint):
    with check.case(f"a run stopped after step {STOP} of {RESUME.max_steps}, then resumed"):
        _resume(check, save_checkpoint, ref.load_checkpoint, "save")


@exercise(ref.load_checkpoint)
def check_load_checkpoint(check, load_checkpoint):
    with check.case(f"a run stopped after step {STOP} of {RESUME.max_steps}, then resumed"):
        _resume(check, ref.save_checkpoint, load_checkpoint, "load")
