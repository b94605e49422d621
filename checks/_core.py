"""What every checker shares: run learner code safely, compare with the reference, explain.

A checker is written as `@exercise(reference)` over a function `body(check, learner)`. The
decorator turns it into `check_<name>(learner)`, which prints one line on success and on
failure raises `CheckFailed` (an `AssertionError`; `NotStarted` for a stub, `HandedReference`
for the reference's stand-in) whose message names the case, what was expected, what came back
and, where the mismatch matches a known mistake, what to fix.

While a check fails, `reference_if_failed` hands the rest of the notebook a marked
stand-in for the reference, so that a check handed it says so instead of passing it.
"""

import functools
import io
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# Checkers import these from here with the rest of what they share.
from checks._cases import plural as plural
from checks._cases import randomize as randomize
from checks._cases import scaled as scaled
from checks._cases import seeded as seeded
from checks._compare import _close, _difference, _plural, _shape_hint, _short
from checks._compare import kind_of as kind_of
from checks._gradients import check_gradients
from checks._hooks import hooks_left, hooks_on, left_message
from checks._verdicts import (
    FAILED,
    MARKS,
    NOT_STARTED,
    PASSED,
    REFERENCE,
    CheckFailed,
    HandedReference,
    NotStarted,
)
from checks._verdicts import WIDTH as WIDTH

# Set on the stand-in `reference_if_failed` returns: the exercise whose reference it is.
FALLBACK = "__reference_fallback__"


@dataclass
class Exercise:
    name: str
    reference: Any
    checker: Callable[[Any], None]
    chapter: str


# By exercise name: what its last check found, the object it checked, and whether the
# notebook currently runs on the reference in its place.
_RESULTS: dict[str, str] = {}
_CHECKED: dict[str, Any] = {}
_ON_REFERENCE: set[str] = set()
_EXERCISES: dict[str, list[Exercise]] = {}


def exercise(reference: Any, name: str | None = None):
    """Register `body(check, learner)` as the checker of the exercise `reference` solves."""
    exercise_name = name or reference.__name__

    def decorate(body: Callable[..., None]) -> Callable[[Any], None]:
        @functools.wraps(body)
        def check_learner(learner: Any) -> None:
            _CHECKED[exercise_name] = learner
            if is_fallback(learner):
                _RESULTS[exercise_name] = HandedReference.status
                raise HandedReference(
                    f"this {exercise_name} is the reference solution the notebook fell back "
                    "to, not your code, so there is nothing of yours to check yet.\n"
                    f"Run the cell that defines your {exercise_name}, then this check again.",
                    exercise=exercise_name,
                ) from None
            check = Check(exercise_name)
            try:
                body(check, learner)
            except CheckFailed as failure:
                verdict = NotStarted if check.not_implemented else CheckFailed
                _RESULTS[exercise_name] = verdict.status
                raise verdict(
                    failure.diagnosis, exercise=exercise_name, case=failure.case
                ) from None
            except Exception as error:  # learner code so broken that the checker itself tripped
                verdict = NotStarted if isinstance(error, NotImplementedError) else CheckFailed
                _RESULTS[exercise_name] = verdict.status
                raise verdict(
                    f"checking your code raised {type(error).__name__}: "
                    f"{error}{_learner_line(error)}",
                    exercise=exercise_name,
                    case=check._case,
                ) from None
            _RESULTS[exercise_name] = PASSED
            _ON_REFERENCE.discard(exercise_name)
            print(f"✓ {exercise_name} passed {check.count} checks")

        chapter = _chapter(body.__module__)
        _EXERCISES.setdefault(chapter, []).append(
            Exercise(exercise_name, reference, check_learner, chapter)
        )
        return check_learner

    return decorate


def _chapter(module: str) -> str:
    """The checks module a checker belongs to: `training` for one in checks/training/ (a
    package whose modules each hold some of a chapter's checkers); else the module's name."""
    parts = module.split(".")
    return parts[1] if parts[0] == "checks" and len(parts) > 1 else parts[-1]


def is_fallback(obj: Any) -> bool:
    """True for the stand-in `reference_if_failed` returns (not for the reference itself)."""
    return FALLBACK in getattr(obj, "__dict__", {})


def reference_if_failed(learner: Any) -> Any:
    """The learner's object if its check passes; otherwise a stand-in for the reference.

    The stand-in behaves as the reference does (a function calls it; a class subclasses
    it, and `isinstance` treats the two as one) but carries a mark, so that a check handed
    it, when a learner re-runs a check cell without re-running their own cell, says so.
    """
    name = getattr(learner, "__name__", None)
    found = [ex for exs in _EXERCISES.values() for ex in exs if ex.name == name]
    if not found:
        return learner
    ex = found[0]
    if not is_fallback(learner):
        if _CHECKED.get(ex.name) is not learner:  # never checked, or redefined since
            try:
                with redirect_stdout(io.StringIO()):
                    ex.checker(learner)
            except CheckFailed:
                pass
        if _RESULTS.get(ex.name) == PASSED:
            _ON_REFERENCE.discard(ex.name)
            return learner
    print(f"→ {ex.name} has not passed its check yet: the cells below use the reference {ex.name}.")
    _ON_REFERENCE.add(ex.name)
    return learner if is_fallback(learner) else _fallback(ex)


def _fallback(ex: Exercise) -> Any:
    reference = ex.reference
    if isinstance(reference, type):
        namespace = {
            FALLBACK: ex.name,
            "__module__": reference.__module__,
            "__qualname__": reference.__qualname__,
            "__doc__": reference.__doc__,
        }
        return _fallback_metaclass(type(reference))(ex.name, (reference,), namespace)

    @functools.wraps(reference)
    def fallback(*args: Any, **kwargs: Any) -> Any:
        return reference(*args, **kwargs)

    setattr(fallback, FALLBACK, ex.name)
    fallback.__name__ = ex.name
    return fallback


@functools.cache
def _fallback_metaclass(meta: type) -> type:
    """A metaclass under which a stand-in class and its reference pass each other's
    isinstance and issubclass tests, so objects the reference builds still count."""

    def instancecheck(cls, obj: Any) -> bool:
        return isinstance(obj, cls.__bases__[0])

    def subclasscheck(cls, sub: type) -> bool:
        return issubclass(sub, cls.__bases__[0])

    return type(
        f"Fallback{meta.__name__}",
        (meta,),
        {"__instancecheck__": instancecheck, "__subclasscheck__": subclasscheck},
    )


def summary(*chapters: str) -> None:
    """Print where each exercise of a chapter (its checks modules) stands in this kernel."""
    marks = {status: f"{mark} {status}" for status, mark in MARKS.items()}
    marks[REFERENCE] = f"{MARKS[REFERENCE]} its check was {REFERENCE}"
    marks[None] = "· not checked yet"
    exercises = [ex for chapter in chapters for ex in _EXERCISES.get(chapter, [])]
    width = max((len(ex.name) for ex in exercises), default=0)
    statuses = [_RESULTS.get(ex.name) for ex in exercises]
    for ex, status in zip(exercises, statuses, strict=True):
        note = ""
        if ex.name in _ON_REFERENCE and status in (FAILED, NOT_STARTED):
            note = " (later cells use the reference)"
        print(f"{ex.name:<{width}}  {marks[status]}{note}")
    print(f"{statuses.count(PASSED)}/{len(exercises)} exercises of this chapter pass.")
    if NOT_STARTED in statuses:
        print("Not started: the code still raises NotImplementedError.")
    if REFERENCE in statuses:
        print("Handed the reference: run the cell that defines your code again, then its check.")


def _learner_line(error: BaseException) -> str:
    """Where in the learner's code an exception was raised (their innermost frame)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _is_learner_file(f.filename)]
    if not frames:
        return ""
    frame = frames[-1]
    line = f"\n  in {frame.name}, line {frame.lineno}"
    return line + (f": {frame.line.strip()}" if frame.line else "")


def _is_learner_file(filename: str) -> bool:
    # Notebook cells run from ipykernel temp files; anything outside our packages and
    # installed libraries is the learner's.
    ours = ("/checks/", "/solutions/", "/course/", "site-packages", "/lib/python")
    return not any(part in filename for part in ours)


@dataclass
class Check:
    """One run of a checker: counts passed cases and formats failures."""

    name: str
    count: int = 0
    _case: str = ""
    not_implemented: bool = False  # the learner's code raised NotImplementedError: a stub
    _inputs: tuple = ()  # the last call's arguments, which a wrong-values verdict quotes

    def fail(self, message: str) -> None:
        """Fail the current case; `message` is the diagnosis (its own line under the case)."""
        raise CheckFailed(message, case=self._case)

    def pair(self, got: Any, names: str) -> tuple[Any, Any]:
        """The two values of a learner function that returns a pair; `names` says which, as
        "(logits, cache)". Anything but a tuple or list of two fails the case."""
        if not isinstance(got, tuple | list) or len(got) != 2:
            self.fail(f"return a pair {names}, not {kind_of(got)}.")
        return got[0], got[1]

    @contextmanager
    def case(self, description: str) -> Iterator[None]:
        """A named case; it counts towards the success line once its block ends cleanly."""
        self._case, self._inputs = description, ()
        yield
        self._case = ""
        self.count += 1

    def build(self, cls: Any, *args: Any) -> Any:
        """Instantiate the learner's class, with a clear message if the constructor fails."""
        return self.call(cls, *args, what=f"{getattr(cls, '__name__', cls)}(...)")

    def call(self, fn: Any, *args: Any, what: str | None = None) -> Any:
        """Call learner code; turn any exception, an input modified in place, or a hook left on
        a module it was handed (or any of its modules), into a verdict."""
        what = what or f"{getattr(fn, '__name__', type(fn).__name__)}"
        if not callable(fn):
            self.fail(f"expected something callable for {what}, got {type(fn).__name__}.")
        before = [a.clone() if isinstance(a, Tensor) else None for a in args]
        self._inputs = before
        hooks = hooks_on(fn, *args)
        try:
            out = fn(*args)
        except NotImplementedError:
            self.not_implemented = True
            self.fail(
                f"{what} is not implemented yet: replace `raise NotImplementedError` with your code."
            )
        except Exception as error:
            self.fail(f"your {what} raised {type(error).__name__}: {error}{_learner_line(error)}")
        left = hooks_left(hooks, hooks_on(fn, *args))
        if left:
            self.fail(left_message(left, what))
        for i, (old, new) in enumerate(zip(before, args, strict=True)):
            if old is not None and not torch.equal(old, new):
                self.fail(
                    f"your {what} modified its input (argument {i + 1}) in place. "
                    "Compute a new tensor instead of writing into the one you were given."
                )
        return out

    def load_weights(self, learner: torch.nn.Module, reference: torch.nn.Module) -> None:
        """Copy the reference's weights into the learner's module, names and shapes asserted."""
        theirs = dict(learner.named_parameters())
        ours = dict(reference.named_parameters())
        missing = sorted(set(ours) - set(theirs))
        extra = sorted(set(theirs) - set(ours))
        if missing or extra:
            self.fail(
                f"parameters differ from the reference. Missing: {missing or 'none'}; "
                f"unexpected: {extra or 'none'}. Keep the constructor as given: the names "
                "are the course's (and TransformerLens's)."
            )
        for key, param in ours.items():
            if theirs[key].shape != param.shape:
                self.fail(
                    f"parameter {key} has shape {tuple(theirs[key].shape)}, "
                    f"expected {tuple(param.shape)}."
                )
        with torch.no_grad():
            for key, param in ours.items():
                theirs[key].copy_(param)

    def gradients(self, learner: torch.nn.Module, reference: torch.nn.Module, *inputs, **kw):
        """Every parameter (and floating input) gets the reference's gradient through the
        learner's module: see `checks._gradients.check_gradients`."""
        check_gradients(self, learner, reference, *inputs, **kw)

    def tensor(
        self,
        got: Any,
        expected: Tensor,
        *,
        what: str = "output",
        mistakes: dict[str, Tensor] | None = None,
        shapes: list[tuple[tuple[int, ...], str]] | None = None,
        rtol: float = 1e-4,
        atol: float = 1e-5,
    ) -> None:
        """Compare a learner tensor with the reference's; name a known mistake if it matches one.

        `mistakes` maps a description to the tensor that mistake produces (of any shape);
        `shapes` lists (wrong shape, description) pairs for mistakes known by shape alone.

        Tolerances: float32 sums of a few hundred products differ between correct
        implementations by ~1e-6 relative; 1e-4 leaves room for that and nothing more.
        The absolute part scales with the output so that large inputs are not held to
        a stricter standard than small ones.
        """
        if got is None:
            self.fail(f"your code returned None for the {what}: did you forget `return`?")
        is_, has, holds = ("are", "have", "hold") if _plural(what) else ("is", "has", "holds")
        if not isinstance(got, Tensor):
            self.fail(
                f"the {what} should be a torch.Tensor of shape {tuple(expected.shape)}, "
                f"got {kind_of(got)}."
            )
        mistakes = mistakes or {}
        if got.shape != expected.shape:
            if got.dtype == expected.dtype:
                for mistake, wrong in mistakes.items():
                    if wrong.shape == got.shape and _close(got, wrong, rtol, atol):
                        self.fail(f"the {what} {is_} wrong: it looks like you {mistake}.")
            # A shape that two mistakes share (common with 1-element inputs) names neither.
            named = [mistake for shape, mistake in shapes or [] if tuple(shape) == got.shape]
            if len(named) == 1:
                self.fail(
                    f"the {what} {has} shape {tuple(got.shape)}, expected "
                    f"{tuple(expected.shape)}: it looks like you {named[0]}."
                )
            hint = _shape_hint(tuple(got.shape), tuple(expected.shape))
            self.fail(
                f"the {what} {has} shape {tuple(got.shape)}, expected "
                f"{tuple(expected.shape)}.{hint}"
            )
        if got.dtype != expected.dtype:
            self.fail(f"the {what} {has} dtype {got.dtype}, expected {expected.dtype}.")
        if got.is_floating_point() and not torch.isfinite(got).all():
            bad = (~torch.isfinite(got)).sum().item()
            self.fail(
                f"the {what} {holds} {bad} NaN or infinite values (the reference's are all finite)."
            )
        got, expected = got.detach(), expected.detach()
        if _close(got, expected, rtol, atol):
            return
        for mistake, wrong in mistakes.items():
            if wrong.shape == got.shape and _close(got, wrong, rtol, atol):
                self.fail(f"the {what} {is_} wrong: it looks like you {mistake}.")
        self.fail(
            f"the {what} {has} the right shape but wrong values.\n"
            f"{_difference(got, expected, self._inputs)}"
        )

    def equal(self, got: Any, expected: Any, *, what: str, hint: str = "") -> None:
        """Compare plain Python values (lists, ints, strings)."""
        if got is None and expected is not None:
            self.fail(f"your code returned None for the {what}: did you forget `return`?")
        if got != expected:
            is_ = "are" if _plural(what) else "is"
            self.fail(f"the {what} {is_} {_short(got)}, expected {_short(expected)}.{hint}")
