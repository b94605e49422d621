"""The checkers of what sets the size of chapter 6b's steps: the learning-rate schedule, and
gradient clipping (checked against torch.nn.utils.clip_grad_norm_)."""

import math

import torch

from checks._core import exercise, seeded
from checks.training._common import _as_float, _number
from solutions import training as ref

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
