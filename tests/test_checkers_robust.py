"""Every checker, handed broken code of the kinds learners write first (a forgotten `return`,
an exception, a value of the wrong type), answers with its own diagnosis: it never passes it
and never trips over it with an error of its own. New checkers are held to this as they are
registered."""

import contextlib
import functools
import importlib
import io
import pkgutil

import pytest
import torch

import checks
from checks._core import _EXERCISES, CheckFailed

for _module in pkgutil.walk_packages(checks.__path__, "checks."):
    if not _module.name.rsplit(".", 1)[-1].startswith("_"):
        importlib.import_module(_module.name)

EXERCISES = [ex for chapter in sorted(_EXERCISES) for ex in _EXERCISES[chapter]]
EXERCISES = [ex for ex in EXERCISES if ex.chapter != "test_core"]


def _raise(*args, **kwargs):
    raise RuntimeError("the learner's own error")


def broken_versions(reference) -> dict:
    """Stand-ins for `reference` with the same name (and, for a class, its constructor and
    parameters), each broken in one way."""
    if isinstance(reference, type):
        if issubclass(reference, torch.nn.Module):
            methods = ["forward"]
        else:  # the methods the learner writes: those the reference defines itself
            methods = [n for n, f in vars(reference).items() if callable(f) and n[0] != "_"]

        def with_methods(method):
            return type(reference.__name__, (reference,), dict.fromkeys(methods, method))

        return {
            "forgets return": with_methods(lambda self, *a, **k: None),
            "raises": with_methods(lambda self, *a, **k: _raise()),
            "returns an int": with_methods(lambda self, *a, **k: 3),
        }
    same_name = functools.wraps(reference)
    return {
        "forgets return": same_name(lambda *a, **k: None),
        "raises": same_name(_raise),
        "returns a str": same_name(lambda *a, **k: "oops"),
    }


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda ex: f"{ex.chapter}.{ex.name}")
def test_broken_code_gets_a_diagnosis_not_a_pass_or_a_checker_error(exercise):
    broken = broken_versions(exercise.reference)
    for how, version in broken.items():
        with pytest.raises(CheckFailed) as failure, contextlib.redirect_stdout(io.StringIO()):
            exercise.checker(version)
        diagnosis = failure.value.diagnosis
        where = f"{exercise.name} that {how}: {diagnosis!r}"
        assert not diagnosis.startswith("checking your code raised"), where
        if how == "raises":
            assert "RuntimeError: the learner's own error" in diagnosis, where
        assert " a int" not in diagnosis and "NoneType" not in diagnosis, where
