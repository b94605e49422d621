"""The checker machinery turns every kind of broken learner code into an actionable verdict."""

import pytest
import torch
from torch import nn

from checks import CheckFailed, HandedReference, NotStarted, reference_if_failed, summary
from checks._core import (
    _CHECKED,
    _EXERCISES,
    _ON_REFERENCE,
    _RESULTS,
    FAILED,
    NOT_STARTED,
    PASSED,
    REFERENCE,
    WIDTH,
    Check,
    exercise,
    is_fallback,
)
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


@pytest.fixture(autouse=True)
def fresh_kernel():
    """Each test starts as a fresh kernel would: no exercise checked yet."""
    for state in (_RESULTS, _CHECKED):
        state.pop("Double", None), state.pop("triple", None)
    _ON_REFERENCE.difference_update({"Double", "triple"})


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


def test_wrong_values_show_the_entries_around_the_largest_error_and_the_input_there():
    def relu(x):
        return x.abs() * (x != 0)  # wrong for negative inputs only

    check = Check("relu")
    x = torch.zeros(2, 200)
    x[1, 93] = -3.0  # the first entries agree; the error sits here alone
    with pytest.raises(CheckFailed) as failure, check.case("200 values"):
        check.tensor(check.call(relu, x), torch.relu(x))
    message = str(failure.value)
    assert "max abs error 3 at index [1, 93]" in message
    assert "expected[1, 92:96] = [0, 0, 0, 0]" in message
    assert "got     [1, 92:96] = [0, 3, 0, 0]" in message
    assert "input   [1, 92:96] = [0, -3, 0, 0]" in message
    assert "times" not in message  # a single nonzero entry is no evidence of a scale factor


def test_one_rule_for_an_integer_across_the_checkers():
    import numpy as np

    from checks._compare import integer_value, require_int

    for value in [7, np.int64(7), np.uint8(7), np.array(7), torch.tensor(7)]:
        assert integer_value(value) == 7 and type(integer_value(value)) is int, value
    for value in [7.0, np.float64(7), torch.tensor(7.0), True, "7", [7], torch.tensor([7, 7])]:
        assert integer_value(value) is None, value
    check = Check("count")
    with pytest.raises(CheckFailed, match="use //"):
        require_int(check, 12 / 2, "number of bytes")
    with pytest.raises(CheckFailed, match="forget `return`"):
        require_int(check, None, "number of bytes")


def test_not_a_class_still_gets_a_verdict():
    assert_rejects(check_double, None, "expected something callable")


def test_failure_hides_checker_internals_in_jupyter():
    with pytest.raises(CheckFailed) as failure:
        check_double(variant(lambda self, x: None))
    rendered = failure.value._render_traceback_()
    assert len(rendered) == 1 and "✗ Double" in rendered[0]


def test_verdict_puts_the_diagnosis_under_the_case():
    message = assert_rejects(check_double, variant(lambda self, x: None), "did you forget")
    heading, diagnosis = message.splitlines()[:2]
    assert heading == "Double — case: batch 1"
    assert diagnosis.startswith("  your code returned None")


def test_rendered_verdict_breaks_long_lines_between_words():
    def forward(self, x):
        raise ValueError("a very long complaint " * 12)

    with pytest.raises(CheckFailed) as failure:
        check_double(variant(forward))
    (rendered,) = failure.value._render_traceback_()
    lines = rendered.removeprefix("\x1b[31m").removesuffix("\x1b[0m").splitlines()
    assert lines[0] == "✗ Double — case: batch 1"
    assert all(len(line) <= WIDTH for line in lines), lines
    assert all(line.startswith("  ") for line in lines[1:])
    # 12 in the message, 1 in the learner's line quoted under it: none cut in two.
    assert " ".join(line.strip() for line in lines).count("a very long complaint") == 13


@exercise(lambda x: x * 3, name="triple")
def check_triple(check, learner):
    with check.case("x = 2"):
        check.equal(check.call(learner, 2), 6, what="result")


def test_reference_is_used_while_the_check_fails(capsys):
    broken = variant(lambda self, x: None)
    with pytest.raises(CheckFailed):
        check_double(broken)
    fallback = reference_if_failed(broken)
    assert "has not passed its check yet" in capsys.readouterr().out
    assert is_fallback(fallback) and not is_fallback(Double)
    assert fallback.__name__ == "Double" and issubclass(fallback, Double)
    # Later cells build, call and test the stand-in as they would the reference.
    x = torch.randn(2, 3)
    model = fallback()
    assert isinstance(model, nn.Module) and isinstance(model, Double)
    assert isinstance(Double(), fallback) and issubclass(Double, fallback)
    assert torch.equal(model(x), Double()(x))
    assert dict(model.named_parameters()).keys() == dict(Double().named_parameters()).keys()
    assert reference_if_failed(Double) is Double


def test_check_handed_the_reference_says_so_and_never_passes(capsys):
    with pytest.raises(CheckFailed):
        check_double(variant(lambda self, x: None))
    fallback = reference_if_failed(fallback_source := variant(lambda self, x: None))
    assert fallback is not fallback_source
    message = assert_rejects(
        check_double,
        fallback,
        "the reference solution the notebook fell back to, not your code",
        "Run the cell that defines your Double, then this check again.",
    )
    assert message.splitlines()[0] == "Double"
    assert _RESULTS["Double"] == REFERENCE
    # Re-running the fallback cell keeps the stand-in and does not re-check it.
    assert reference_if_failed(fallback) is fallback
    capsys.readouterr()
    summary("test_core")
    out = capsys.readouterr().out
    assert "Double  → its check was handed the reference" in out and "0/2 exercises" in out


def test_function_stand_in_calls_the_reference_and_is_marked():
    fallback = reference_if_failed(lambda x: None)  # no exercise has the name <lambda>
    assert not is_fallback(fallback)

    def triple(x):
        raise NotImplementedError()

    with pytest.raises(CheckFailed):
        check_triple(triple)
    fallback = reference_if_failed(triple)
    assert is_fallback(fallback) and fallback(5) == 15 and fallback.__name__ == "triple"
    assert_rejects(check_triple, fallback, "fell back to")


def test_stand_in_class_keeps_classmethods():
    from checks.tokenizer import check_bpe_tokenizer  # noqa: F401 (registers the exercise)
    from solutions.tokenizer import BPETokenizer

    class Stub(BPETokenizer):
        __name__ = "BPETokenizer"

    _RESULTS["BPETokenizer"], _CHECKED["BPETokenizer"] = FAILED, Stub
    fallback = reference_if_failed(Stub)
    tok = fallback.train("aaaa", 258)
    assert isinstance(tok, fallback) and isinstance(tok, BPETokenizer)
    assert tok.encode("aaaa") == BPETokenizer.train("aaaa", 258).encode("aaaa") == [257]


def test_redefined_code_is_checked_again_before_it_is_used(capsys):
    check_double(Double)
    assert reference_if_failed(Double) is Double
    broken = variant(lambda self, x: None)  # redefined, its check cell not run again
    assert is_fallback(reference_if_failed(broken))
    assert _RESULTS["Double"] == FAILED


def test_summary_tells_each_state_apart(capsys):
    def triple(x):
        raise NotImplementedError()

    summary("test_core")
    assert "Double  · not checked yet" in capsys.readouterr().out
    with pytest.raises(CheckFailed):
        check_triple(triple)
    with pytest.raises(CheckFailed):
        check_double(variant(lambda self, x: None))
    reference_if_failed(triple)
    capsys.readouterr()
    summary("test_core")
    out = capsys.readouterr().out
    assert "Double  ✗ failed\n" in out
    assert "triple  ○ not started (later cells use the reference)" in out
    assert (
        "Not started: the code still raises NotImplementedError" in out and "0/2 exercises" in out
    )
    check_double(Double)
    summary("test_core")
    out = capsys.readouterr().out
    assert "Double  ✓ passed" in out and "1/2 exercises" in out
    assert [ex.name for ex in _EXERCISES["test_core"]] == ["Double", "triple"]


def test_each_verdict_is_raised_as_its_own_class_and_recorded_as_its_status(capsys):
    def triple(x):
        raise NotImplementedError()

    with pytest.raises(NotStarted) as stub:
        check_triple(triple)
    assert _RESULTS["triple"] == NOT_STARTED == stub.value.status
    with pytest.raises(CheckFailed) as failure:
        check_double(variant(lambda self, x: None))
    assert type(failure.value) is CheckFailed and _RESULTS["Double"] == FAILED
    with pytest.raises(HandedReference) as handed:
        check_triple(reference_if_failed(triple))
    assert _RESULTS["triple"] == REFERENCE == handed.value.status
    # Every kind is a CheckFailed and an AssertionError, so `except CheckFailed` takes each.
    for verdict in (stub, failure, handed):
        assert isinstance(verdict.value, CheckFailed) and isinstance(verdict.value, AssertionError)
    # A stub's verdict looks as any failure does; the stand-in's is blue.
    assert stub.value._render_traceback_()[0].startswith("\x1b[31m✗ triple — case: x = 2")
    assert handed.value._render_traceback_()[0].startswith("\x1b[34m→ triple")
    check_double(Double)
    assert _RESULTS["Double"] == PASSED
    capsys.readouterr()
