"""Time every checker on its reference solution: `python -m course.bench` (or `make bench`).

A check should answer in about a second on a 2-core laptop CPU; slower ones are flagged.
"""

import contextlib
import importlib
import io
import pkgutil
import time

import checks
from checks._core import _EXERCISES

BUDGET_S = 1.5


def main() -> None:
    for module in pkgutil.iter_modules(checks.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"checks.{module.name}")
    rows = []
    for chapter, exercises in _EXERCISES.items():
        for ex in exercises:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                ex.checker(ex.reference)
            rows.append((time.perf_counter() - start, chapter, ex.name))
    for seconds, chapter, name in sorted(rows, reverse=True):
        flag = "  <- over budget" if seconds > BUDGET_S else ""
        print(f"{seconds:6.2f} s  {chapter}.{name}{flag}")
    print(
        f"{len(rows)} checks, slowest {max(rows)[0]:.2f} s, total {sum(r[0] for r in rows):.1f} s"
    )


if __name__ == "__main__":
    main()
