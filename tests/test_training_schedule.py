"""The chapter 6b checkers of the learning-rate schedule and of clipping accept other writings,
and name each usual mistake: a schedule off by one, a cosine that ends at 0, clipping each
parameter alone."""

import math

import pytest
import torch

from checks import training as checks
from solutions import training as ref
from support import assert_accepts, assert_rejects

# --- The schedule ----------------------------------------------------------------------------


def schedule(*, warm=1, warmup=True, floor=True, start_after_warmup=True, clamp=True):
    def learning_rate(step, tcfg):
        if warmup and step < tcfg.warmup_steps:
            return tcfg.max_lr * (step + warm) / tcfg.warmup_steps
        start = tcfg.warmup_steps if start_after_warmup else 0
        progress = (step - start) / (tcfg.max_steps - start)
        progress = min(progress, 1) if clamp else progress
        low = tcfg.min_lr if floor else 0.0
        return low + (tcfg.max_lr - low) * (math.cos(math.pi * progress) + 1) / 2

    return learning_rate


def test_learning_rate_accepts_the_reference_and_a_tensor_writing(capsys):
    assert_accepts(checks.check_learning_rate, ref.learning_rate, capsys)
    assert_accepts(checks.check_learning_rate, schedule(), capsys)

    def with_tensors(step, tcfg):
        warm = torch.tensor(tcfg.max_lr * (step + 1) / tcfg.warmup_steps)
        t = torch.tensor((step - tcfg.warmup_steps) / (tcfg.max_steps - tcfg.warmup_steps))
        cosine = tcfg.min_lr + (tcfg.max_lr - tcfg.min_lr) * 0.5 * (1 + torch.cos(torch.pi * t))
        late = torch.tensor(tcfg.min_lr, dtype=torch.float64)
        warming = torch.tensor(step < tcfg.warmup_steps)
        return torch.where(t > 1, late, torch.where(warming, warm, cosine))

    assert_accepts(checks.check_learning_rate, with_tensors, capsys)


@pytest.mark.parametrize(
    "learner, message",
    [
        (schedule(warm=0), "warmed up off by one"),
        (schedule(warmup=False, start_after_warmup=False), "left out the warm-up"),
        (schedule(floor=False), "fall to 0"),
        (schedule(start_after_warmup=False), "over all of max_steps"),
        (schedule(clamp=False), "past max_steps"),
        (lambda step, tcfg: None, "did you forget `return`"),
    ],
    ids=["off-by-one", "no-warmup", "to-zero", "whole-cosine", "unclamped", "none"],
)
def test_learning_rate_rejects_and_names(learner, message):
    assert_rejects(checks.check_learning_rate, learner, message)


def test_learning_rate_rejects_a_linear_decay():
    def linear(step, tcfg):
        if step < tcfg.warmup_steps:
            return tcfg.max_lr * (step + 1) / tcfg.warmup_steps
        progress = min(1, (step - tcfg.warmup_steps) / (tcfg.max_steps - tcfg.warmup_steps))
        return tcfg.max_lr - (tcfg.max_lr - tcfg.min_lr) * progress

    assert_rejects(checks.check_learning_rate, linear, "decayed linearly")


# --- Clipping ----------------------------------------------------------------------------------


def test_clip_grad_norm_accepts_the_reference_and_torch_s(capsys):
    assert_accepts(checks.check_clip_grad_norm, ref.clip_grad_norm, capsys)

    def torch_s(parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)

    assert_accepts(checks.check_clip_grad_norm, torch_s, capsys)

    def sum_of_squares(parameters, max_norm):
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = math.sqrt(sum((g**2).sum().item() for g in grads))
        if norm > max_norm:
            for g in grads:
                g *= max_norm / (norm + 1e-6)
        return norm

    assert_accepts(checks.check_clip_grad_norm, sum_of_squares, capsys)


def clip(*, per_param=False, always=False, total="global", twice=False, after=False):
    @torch.no_grad()
    def clip_grad_norm(parameters, max_norm):
        params = parameters if twice else list(parameters)
        norms = [p.grad.norm() for p in params if p.grad is not None]
        norm = {"global": torch.stack(norms).norm(), "sum": sum(norms)}[total]
        for p in params:
            if p.grad is None:
                continue
            own = p.grad.norm() if per_param else norm
            factor = max_norm / (own + 1e-6)
            p.grad.mul_(factor if always else factor.clamp(max=1))
        return norm.clamp(max=max_norm) if after else norm

    return clip_grad_norm


@pytest.mark.parametrize(
    "learner, message",
    [
        (clip(per_param=True), "clipped each parameter's gradient by its own norm"),
        (clip(always=True), "even when their norm was below it"),
        (clip(total="sum"), "added up the parameters' norms"),
        (clip(twice=True), "model.parameters() is a generator"),
        (clip(after=True), "returned the norm after clipping"),
    ],
    ids=["per-parameter", "always", "sum-of-norms", "generator-twice", "norm-after"],
)
def test_clip_grad_norm_rejects_and_names(learner, message):
    assert_rejects(checks.check_clip_grad_norm, learner, message)
