"""Grade exercise notebooks: `python -m course.grade exercises/01_embeddings.ipynb ...`.

Runs a copy of each notebook from top to bottom (the file itself is never written) and
lists every check cell as passed or failed, with the start of its verdict. Exits
with status 1 if any check failed or the notebook stopped early, so a learner's CI can
run it after nbval (which lets check cells fail: they are tagged `raises-exception`).
"""

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError

from course.notebooks import execute, is_check_cell


def grade(path: Path) -> tuple[list[tuple[str, str | None]], str | None]:
    """Each check cell with None if it passed, else the start of its verdict; and
    the error that stopped the notebook early, if one did."""
    nb = nbformat.read(path, as_version=4)
    stopped = None
    try:
        execute(nb, path.parent)
    except CellExecutionError as error:
        stopped = str(error).strip().splitlines()[-1]
    results = []
    for cell in nb.cells:
        if is_check_cell(cell):
            errors = [o for o in cell.outputs if o.output_type == "error"]
            ran = cell.get("execution_count") is not None
            failure = None
            if errors:
                # The verdict's heading (exercise and case) and its diagnosis's first line.
                lines = f"{errors[0].ename}: {errors[0].evalue}".splitlines()[:2]
                failure = "\n".join(line.strip() for line in lines)
            elif not ran:
                failure = "not run: the notebook stopped before this cell"
            results.append((cell.source.strip(), failure))
    return results, stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.grade", description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    all_pass = True
    for path in args.notebooks:
        results, stopped = grade(path)
        print(path)
        if stopped:
            print(f"  the notebook stopped early: {stopped}")
        for source, failure in results:
            if failure is None:
                print(f"  ✓ {source}")
            else:
                print(f"  ✗ {source}\n      " + failure.replace("\n", "\n      "))
        passed = sum(failure is None for _, failure in results)
        print(f"  {passed} of {len(results)} checks pass")
        all_pass &= passed == len(results) and not stopped
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
