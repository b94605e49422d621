"""The checker machinery turns every kind of broken learner code into an actionable verdict."""

import pytest
import torch
from torch import nn

from checks import CheckFailed, reference_if_failed, summary
from checks._core import _EXERCISES, _RESULTS, exercise
from support import assert_accepts, assert_rejects


class Double(nn.Module):
    """A stand-in exercise: y = x * scale + bias."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return x * self.scale + self.bias


@exercise(Double, name="Double")
def check_double(check, learner_cls):
    for n in [1, 4]:
        with check.case(f"batch {n}"):
            ref = Double()
            with torch.no_grad():
                ref.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
            learner = check.build(learner_cls)
            check.load_weights(learner, ref)
            x = torch.randn(n, 3, generator=torch.Generator().manual_seed(n))
            got = check.call(learner, x, what="Double.forward")
            check.tensor(got, ref(x), mistakes={"forgot the bias": x * 2.0})


def variant(forward):
    return type("Double", (Double,), {"forward": forward})


def test_reference_passes_with_one_line(capsys):
    assert_accepts(check_double, Double, capsys)
    assert capsys.readouterr().out == ""


def test_success_line_counts_the_cases(capsys):
    check_double(Double)
    assert capsys.readouterr().out == "✓ Double passed 2 checks\n"


def test_stub_is_reported_as_not_implemented():
    def forward(self, x):
        raise NotImplementedError()

    assert_rejects(check_double, variant(forward), "not implemented yet")


def test_none_is_reported_as_missing_return():
    assert_rejects(check_double, variant(lambda self, x: None), "did you forget `return`")


def test_wrong_type_is_named():
    assert_rejects(check_double, variant(lambda self, x: x.tolist()), "got a list")


def test_wrong_shape_is_reported_with_both_shapes():
    assert_rejects(check_double, variant(lambda self, x: x.T), "shape (3, 1), expected (1, 3)")


def test_wrong_dtype_is_reported():
    assert_rejects(check_double, variant(lambda self, x: (x * 2).double()), "dtype torch.float64")


def test_nan_is_reported():
    assert_rejects(check_double, variant(lambda self, x: x * float("nan")), "NaN or infinite")


def test_learner_exception_names_their_line():
    def forward(self, x):
        return x @ torch.ones(4, 4)

    message = assert_rejects(check_double, variant(forward), "raised RuntimeError", "line")
    assert "_core.py" not in message


def test_in_place_modification_is_caught():
    def forward(self, x):
        x.mul_(self.scale)
        return x + self.bias

    assert_rejects(check_double, variant(forward), "modified its input")


def test_misnamed_parameter_is_named():
    class Renamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.factor = nn.Parameter(torch.tensor(2.0))
            self.bias = nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return x * self.factor + self.bias

    assert_rejects(check_double, Renamed, "Missing: ['scale']", "unexpected: ['factor']")


def test_known_mistake_is_diagnosed():
    assert_rejects(check_double, variant(lambda self, x: x * self.scale), "forgot the bias")


def test_constant_factor_is_diagnosed():
    def forward(self, x):
        return (x * self.scale + self.bias) * 3

    assert_rejects(check_double, variant(forward), "times 3")


def test_not_a_class_still_gets_a_verdict():
    assert_rejects(check_double, None, "expected something callable")


def test_failure_hides_checker_internals_in_jupyter():
    with pytest.raises(CheckFailed) as failure:
        check_double(variant(lambda self, x: None))
    rendered = failure.value._render_traceback_()
    assert len(rendered) == 1 and "✗ Double" in rendered[0]


def test_reference_is_used_while_the_check_fails(capsys):
    broken = variant(lambda self, x: None)
    with pytest.raises(CheckFailed):
        check_double(broken)
    assert reference_if_failed(broken) is Double
    assert "has not passed its check yet" in capsys.readouterr().out
    assert reference_if_failed(Double) is Double


def test_summary_lists_every_exercise_of_the_chapter(capsys):
    _RESULTS.pop("Double", None)
    summary("test_core")
    assert "Double  · not checked yet" in capsys.readouterr().out
    check_double(Double)
    summary("test_core")
    out = capsys.readouterr().out
    assert "Double  ✓ passed" in out and "1/1 exercises" in out
    assert [ex.name for ex in _EXERCISES["test_core"]] == ["Double"]
