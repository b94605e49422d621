"""Every checker timed on its reference solution (`python -m course.bench checks`): a check
should answer in about a second on a 2-core laptop CPU; slower ones are flagged."""

import contextlib
import io
import time

import checks

BUDGET_S = 1.5


def bench_checks() -> None:
    rows = []
    for ex in checks.all_exercises():
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            ex.checker(ex.reference)
        rows.append((time.perf_counter() - start, ex.chapter, ex.name))
    for seconds, chapter, name in sorted(rows, reverse=True):
        flag = "  <- over budget" if seconds > BUDGET_S else ""
        print(f"{seconds:6.2f} s  {chapter}.{name}{flag}")
    print(
        f"{len(rows)} checks, slowest {max(rows)[0]:.2f} s, total {sum(r[0] for r in rows):.1f} s"
    )
