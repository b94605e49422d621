"""The chapter 6 checkers of what is measured and fitted (the training FLOPs counted by torch,
a power law, an isoFLOP curve's bottom) accept correct variants and name the usual slips: a
count of the forward pass alone, the exponent and coefficient swapped, a fit in linear space,
the lowest measured point in place of the parabola's bottom."""

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from checks import scaling as checks
from solutions import scaling as ref
from support import assert_accepts, assert_rejects

# --- The checkers: reference and variants pass --------------------------------------------


def count_with_sum_loss(model, tokens):
    counter = FlopCounterMode(display=False)
    with counter:
        model(tokens).sum().backward()
    return int(counter.get_total_flops())


def fit_with_torch(x, y):
    lx, ly = torch.tensor(x, dtype=torch.float64).log(), torch.tensor(y, dtype=torch.float64).log()
    a = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    return a, torch.exp(ly.mean() - a * lx.mean())


def fit_with_log10(x, y):
    a, c = np.polyfit(np.log10(x), np.log10(y), 1)
    return a, 10**c


def bottom_with_polynomial(n, losses):
    # numpy's Polynomial class, in log10 N, and the bottom found by its derivative's root.
    p = np.polynomial.Polynomial.fit(np.log10(n), losses, 2)
    x = p.deriv().roots()[0]
    return 10**x, p(x)


def bottom_with_torch(n, losses):
    # Least squares by hand: the design matrix [1, x, x²] and torch's lstsq.
    x = torch.tensor(n, dtype=torch.float64).log()
    design = torch.stack([torch.ones_like(x), x, x**2], dim=1)
    c, b, a = torch.linalg.lstsq(
        design, torch.tensor(losses, dtype=torch.float64)[:, None]
    ).solution[:, 0]
    x0 = -b / (2 * a)
    return x0.exp(), c + b * x0 + a * x0**2


@pytest.mark.parametrize(
    "checker, learner",
    [
        (checks.check_count_training_flops, ref.count_training_flops),
        (checks.check_count_training_flops, count_with_sum_loss),
        (checks.check_fit_power_law, ref.fit_power_law),
        (checks.check_fit_power_law, fit_with_torch),
        (checks.check_fit_power_law, fit_with_log10),
        (checks.check_isoflop_minimum, ref.isoflop_minimum),
        (checks.check_isoflop_minimum, bottom_with_polynomial),
        (checks.check_isoflop_minimum, bottom_with_torch),
    ],
    ids=lambda v: getattr(v, "__name__", "lambda"),
)
def test_checker_accepts(checker, learner, capsys):
    assert_accepts(checker, learner, capsys)


# --- The checkers name the usual slips ----------------------------------------------------


def count_forward_only(model, tokens):
    with FlopCounterMode(display=False) as counter:
        loss = model(tokens).sum()
    loss.backward()
    return counter.get_total_flops()


def count_returning_the_counter(model, tokens):
    with FlopCounterMode(display=False) as counter:
        model(tokens).sum().backward()
    return counter


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (count_forward_only, "inside the `with FlopCounterMode"),
        (count_returning_the_counter, "should be a number"),
    ],
)
def test_check_count_training_flops_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_count_training_flops, learner, fragment)


def coefficient_from_mean_ratio(x, y):
    # The arithmetic mean of y / x^a is not the least-squares intercept's exp (a geometric mean).
    a = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0]
    return a, float(np.mean(np.asarray(y, float) / np.asarray(x, float) ** a))


def fit_in_linear_space(x, y):
    a, c = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return a, c


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda x, y: ref.fit_power_law(x, y)[::-1], "return the exponent first"),
        (lambda x, y: (ref.fit_power_law(x, y)[0], math.log(ref.fit_power_law(x, y)[1])), "exp("),
        (
            lambda x, y: (
                np.polyfit(np.log10(x), np.log10(y), 1)[0],
                math.exp(np.polyfit(np.log10(x), np.log10(y), 1)[1]),
            ),
            "10**intercept",
        ),
        (fit_in_linear_space, "log y against log x"),
        (coefficient_from_mean_ratio, "the coefficient b is"),
    ],
    ids=["swapped", "log-b", "log10-exp", "linear", "mean-ratio-b"],
)
def test_check_fit_power_law_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_fit_power_law, learner, fragment)


def bottom_in_log(n, losses):
    a, b, c = np.polyfit(np.log(n), losses, 2)
    return -b / (2 * a), np.polyval([a, b, c], -b / (2 * a))


def bottom_without_the_2(n, losses):
    a, b, c = np.polyfit(np.log(n), losses, 2)
    return math.exp(-b / a), np.polyval([a, b, c], -b / a)


def bottom_in_linear_n(n, losses):
    a, b, c = np.polyfit(np.asarray(n, float), losses, 2)
    return -b / (2 * a), np.polyval([a, b, c], -b / (2 * a))


def lowest_point(n, losses):
    i = int(np.argmin(losses))
    return n[i], losses[i]


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (bottom_in_log, "exp of it"),
        (bottom_without_the_2, "-b / (2·a)"),
        (bottom_in_linear_n, "against log N"),
        (lowest_point, "lowest measured point"),
        (lambda n, losses: ref.isoflop_minimum(n, losses)[::-1], "return N first"),
    ],
    ids=["log-n", "no-2", "linear-n", "lowest-point", "swapped"],
)
def test_check_isoflop_minimum_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_isoflop_minimum, learner, fragment)


def test_isoflop_minimum_finds_a_parabola_s_bottom():
    n = [1e4, 1e5, 1e6]
    losses = [2 + 0.1 * (math.log(x) - math.log(3e5)) ** 2 for x in n]
    bottom, loss = ref.isoflop_minimum(n, losses)
    assert math.isclose(bottom, 3e5) and math.isclose(loss, 2)
