"""What a check can find, as data: the status words, their marks, and the exceptions that
carry them, one class per status, so that a reader of a notebook's error output (the grader)
tells them apart by the class's name (`ename`) rather than by the message's wording.

Nothing here imports torch: the grader reads verdicts without it.
"""

import textwrap

# What a check found. `summary` and the grader show these words; only PASSED earns points.
PASSED, FAILED, NOT_STARTED, REFERENCE = "passed", "failed", "not started", "handed the reference"
MARKS = {PASSED: "✓", FAILED: "✗", NOT_STARTED: "○", REFERENCE: "→"}
WIDTH = 88  # verdict lines are wrapped between words at this width in Jupyter


class CheckFailed(AssertionError):
    """A check's verdict on learner code. Jupyter shows the message alone, not our internals.

    The message is a heading, the exercise and the case (`Attention — case: batch 2`), then
    the diagnosis on the lines below it; `diagnosis` holds the diagnosis alone.
    """

    status = FAILED
    mark, colour = MARKS[FAILED], 31

    def __init__(self, diagnosis: str, *, exercise: str = "", case: str = ""):
        self.diagnosis, self.exercise, self.case = diagnosis, exercise, case
        heading = " — ".join(part for part in [exercise, case and f"case: {case}"] if part)
        text = textwrap.indent(diagnosis, "  ") if heading else diagnosis
        super().__init__(f"{heading}\n{text}" if heading else text)

    def _render_traceback_(self) -> list[str]:
        lines = [_wrap(line) for line in f"{self.mark} {self}".splitlines()]
        return [f"\x1b[{self.colour}m" + "\n".join(lines) + "\x1b[0m"]


class NotStarted(CheckFailed):
    """The verdict on code that still raises NotImplementedError. In the notebook it looks
    as any failure does (a red ✗); `summary` and the grader count it apart."""

    status = NOT_STARTED


class HandedReference(CheckFailed):
    """The verdict on the stand-in `reference_if_failed` returns: not the learner's code."""

    status = REFERENCE
    mark, colour = MARKS[REFERENCE], 34


# Each status by the name of the exception that carries it, as a notebook's error output
# records it (`ename`).
STATUS_OF = {cls.__name__: cls.status for cls in (CheckFailed, NotStarted, HandedReference)}


def _wrap(line: str) -> str:
    """A long line broken between words, its indent kept (Jupyter would break mid-word)."""
    if len(line) <= WIDTH:
        return line
    indent = line[: len(line) - len(line.lstrip())]
    return textwrap.fill(
        line,
        WIDTH,
        subsequent_indent=indent + ("  " if not indent else ""),
        break_long_words=False,
        break_on_hyphens=False,
    )
