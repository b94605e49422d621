"""Every checker, handed broken code of the kinds learners write first (a forgotten `return`,
an exception, a value of the wrong type, NaNs, one position too few, wrong numbers), answers
with its own diagnosis: it never passes it and never trips over it with an error of its own.
New checkers are held to this as they are registered."""

import contextlib
import functools
import io

import pytest
import torch

from checks import CheckFailed, all_exercises

EXERCISES = all_exercises()


def _raise(*args, **kwargs):
    raise RuntimeError("the learner's own error")


SPOILED = []  # one entry each time a stand-in below spoils a tensor


def _spoiled(output, spoil):
    """`output` with `spoil` applied to its floating-point tensors (in a tuple too), 0-dim
    ones included where the spoil applies to them."""
    if isinstance(output, torch.Tensor) and output.is_floating_point():
        if output.ndim or spoil is not _drop_last_position:
            SPOILED.append(spoil)
            return spoil(output)
    if isinstance(output, tuple):
        return tuple(_spoiled(item, spoil) for item in output)
    return output


def _drop_last_position(t):
    return t[..., :-1]


SPOILS = {
    "returns NaN": lambda t: torch.full_like(t, float("nan")),
    "drops the last position": _drop_last_position,
    "is off in value": lambda t: t * 1.5 + 0.1,
}


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

        versions = {
            "forgets return": with_methods(lambda self, *a, **k: None),
            "raises": with_methods(lambda self, *a, **k: _raise()),
            "returns an int": with_methods(lambda self, *a, **k: 3),
        }
        if methods == ["forward"]:
            for how, spoil in SPOILS.items():
                versions[how] = with_methods(
                    lambda self, *a, spoil=spoil, **k: _spoiled(
                        reference.forward(self, *a, **k), spoil
                    )
                )
        return versions
    same_name = functools.wraps(reference)
    versions = {
        "forgets return": same_name(lambda *a, **k: None),
        "raises": same_name(_raise),
        "returns a str": same_name(lambda *a, **k: "oops"),
    }
    for how, spoil in SPOILS.items():
        versions[how] = same_name(lambda *a, spoil=spoil, **k: _spoiled(reference(*a, **k), spoil))
    return versions


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda ex: f"{ex.chapter}.{ex.name}")
def test_broken_code_gets_a_diagnosis_not_a_pass_or_a_checker_error(exercise):
    broken = broken_versions(exercise.reference)
    for how, version in broken.items():
        SPOILED.clear()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exercise.checker(version)
        except CheckFailed as failure:
            diagnosis = failure.diagnosis
        else:
            # Passing is right only for a spoil that found no floating-point tensor to spoil.
            assert how in SPOILS and not SPOILED, f"{exercise.name} that {how} passed its check"
            continue
        where = f"{exercise.name} that {how}: {diagnosis!r}"
        assert not diagnosis.startswith("checking your code raised"), where
        if how == "raises":
            assert "RuntimeError: the learner's own error" in diagnosis, where
        assert " a int" not in diagnosis and "NoneType" not in diagnosis, where
