"""Grade exercise notebooks: `make grade`, or `python -m course.grading.grade [NOTEBOOK or FOLDER ...]`.

Runs a copy of each notebook from top to bottom, in a process of its own with a time limit
(the file itself is never written), and prints, chapter by chapter, which exercises pass.
Exits with status 1 unless every check of every notebook passes, so that a learner's CI
fails until the work is done. `--markdown FILE` appends the same tables in Markdown (for a
GitHub Actions job summary, `--markdown "$GITHUB_STEP_SUMMARY"`).

An instructor grades a class with `python -m course.grading.gradebook`: see
`course/grading/gradebook.py`.
"""

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from checks._verdicts import FAILED, MARKS, NOT_STARTED, PASSED, STATUS_OF
from course.notebooks import EXERCISES, ROOT, SOURCES, all_stems, is_check_cell, parse

# What a grade row can say about an exercise: what its check found (the statuses of
# checks._verdicts, of which only PASSED earns points), or what kept the check from running.
NOT_RUN, TIMED_OUT, KERNEL_DIED = "not run", "timed out", "kernel died"
MISSING, EMPTY, MALFORMED, NOT_NOTEBOOK = "missing", "empty", "malformed", "not a notebook"
DEFAULT_DIFFICULTY = 1  # an exercise that declares no `:difficulty:`
TIME_LIMIT = 600.0  # seconds per notebook, kernel start excluded
KERNEL_GRACE = 120.0  # kernel start and shutdown, on top of the time limit


@dataclass
class Row:
    """Where one exercise of one notebook stands."""

    exercise: str
    difficulty: int
    status: str
    message: str = ""


@dataclass
class Graded:
    """A submitted file, graded: its chapter (a notebook stem, or "" if unknown), a row per
    exercise, and what went wrong with the file as a whole, if anything did."""

    path: Path
    chapter: str
    rows: list[Row]
    problem: str = ""  # EMPTY, MALFORMED, NOT_NOTEBOOK, TIMED_OUT, KERNEL_DIED, NOT_RUN or ""
    detail: str = ""

    @property
    def passed(self) -> int:
        return sum(row.status == PASSED for row in self.rows)

    @property
    def all_pass(self) -> bool:
        return bool(self.rows) and self.passed == len(self.rows) and not self.problem


# --- Chapters and their exercises ------------------------------------------------------


@functools.cache
def exercises_of(stem: str) -> tuple[tuple[str, int], ...]:
    """Each exercise of a chapter's source, with its difficulty, in order."""
    source = SOURCES / f"{stem}.md"
    if not source.exists():
        return ()
    _, blocks = parse(source.read_text(encoding="utf-8"))
    return tuple(
        (b.name, int(b.options.get("difficulty", DEFAULT_DIFFICULTY)))
        for b in blocks
        if b.kind == "exercise"
    )


def chapter_of(path: Path, nb: nbformat.NotebookNode | None = None, default: str = "") -> str:
    """The chapter a file belongs to: by its name's stem (`00_toolkit.ipynb`, or one that starts
    with it: `00_toolkit-ada.ipynb`), else by the source its metadata names, else by the
    chapter whose exercises its check cells name most, else `default`."""
    stems = all_stems()
    name = path.name.removesuffix(".ipynb").removesuffix(".updated")
    matches = [s for s in stems if name == s or name.startswith(s)]
    if matches:
        return max(matches, key=len)
    if nb is not None:
        source = str(nb.metadata.get("residual_stream", {}).get("source", ""))
        if Path(source).stem in stems:
            return Path(source).stem
        names = {checked_name(c) for c in nb.cells if is_check_cell(c)}
        overlap = {s: len(names & {n for n, _ in exercises_of(s)}) for s in stems}
        if overlap and max(overlap.values()) > 0:
            return max(overlap, key=overlap.get)
    return default


def checked_name(cell: nbformat.NotebookNode) -> str:
    """The exercise a check cell checks: the name it hands its checker (`check_embed(Embed)`)."""
    match = re.match(r"check_(\w+)\(\s*(\w+)", cell.source)
    return match[2] if match else cell.source.split("(")[0].removeprefix("check_")


# --- Running one notebook, isolated ----------------------------------------------------


def load(path: Path) -> tuple[nbformat.NotebookNode | None, str, str]:
    """The notebook in a file, or None with the problem and a sentence saying what it is."""
    if not path.is_file():
        return None, MISSING, f"{path} does not exist"
    if path.suffix != ".ipynb":
        return None, NOT_NOTEBOOK, f"{path.name} is not a Jupyter notebook (.ipynb)"
    raw = path.read_bytes()
    if not raw.strip():
        return None, EMPTY, f"{path.name} is empty (0 cells, {len(raw)} bytes)"
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # not JSON, not UTF-8, or not a notebook's JSON
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return None, MALFORMED, f"{path.name} cannot be read as a notebook: {first}"
    if not any(c.cell_type == "code" and c.source.strip() for c in nb.cells):
        return None, EMPTY, f"{path.name} has no code in it"
    return nb, "", ""


def run_isolated(path: Path, time_limit: float = TIME_LIMIT) -> tuple[nbformat.NotebookNode, dict]:
    """Execute a copy of a notebook in a new process, as Run All does, for at most
    `time_limit` seconds; return the notebook as far as it ran, and where it stopped
    ({} if it ran to the end). A copy in a temporary folder: the file is never written."""
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        copy = Path(tmp) / "notebook.ipynb"
        shutil.copyfile(path, copy)
        out, stop_file = Path(tmp) / "executed.ipynb", Path(tmp) / "stop.json"
        command = [sys.executable, "-m", "course.grading.grade", "--run-one", str(copy), str(out)]
        command += ["--time-limit", str(time_limit)]
        # The kernel imports the checks this grader belongs to, wherever it runs.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        with open(Path(tmp) / "log.txt", "w") as log:
            process = subprocess.Popen(
                command, cwd=tmp, env=env, stdout=log, stderr=log, start_new_session=True
            )
            try:
                process.wait(timeout=time_limit + KERNEL_GRACE)
            except subprocess.TimeoutExpired:
                _kill_tree(process.pid)
                process.wait()
        if out.exists() and stop_file.exists():
            return nbformat.read(out, as_version=4), json.loads(stop_file.read_text())
        # The worker itself was killed (past the time limit and the grace), or it crashed.
        stop = {"status": TIMED_OUT, "cell": 0, "detail": _limit(time_limit)}
        if process.returncode is not None and process.returncode >= 0:
            log = (Path(tmp) / "log.txt").read_text(errors="replace").strip().splitlines()[-1:]
            stop.update(status=NOT_RUN, detail=f"the grader could not run it: {' '.join(log)}")
        return nbformat.read(copy, as_version=4), stop


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _run_one(src: Path, out: Path, time_limit: float) -> None:
    """The worker: run the notebook's cells in order, recording where and why it stopped."""
    import math

    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(src, as_version=4)
    deadline = [math.inf]
    client = NotebookClient(
        nb,
        kernel_name="python3",
        record_timing=False,
        coalesce_streams=True,
        shutdown_kernel="immediate",
        startup_timeout=int(KERNEL_GRACE),
        timeout_func=lambda cell: max(1, math.ceil(deadline[0] - time.monotonic())),
        resources={"metadata": {"path": str(src.parent)}},
    )
    stop: dict = {}
    try:
        with client.setup_kernel():
            deadline[0] = time.monotonic() + time_limit
            for index, cell in enumerate(nb.cells):
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    stop = {"status": TIMED_OUT, "cell": index, "detail": _limit(time_limit)}
                except DeadKernelError:
                    stop = {"status": KERNEL_DIED, "cell": index, "detail": "the kernel died"}
                except CellExecutionError as error:
                    last = str(error).strip().splitlines()[-1:] or [""]
                    stop = {"status": NOT_RUN, "cell": index, "detail": last[0]}
                if stop:
                    break
    except DeadKernelError:
        stop = stop or {"status": KERNEL_DIED, "cell": 0, "detail": "the kernel died"}
    except RuntimeError as error:  # the kernel never started
        stop = {"status": NOT_RUN, "cell": 0, "detail": f"the kernel did not start: {error}"}
    if stop:
        stop["detail"] = f"the notebook stopped at cell {stop['cell'] + 1}: {stop['detail']}"
    nbformat.write(nb, out)
    (out.parent / "stop.json").write_text(json.dumps(stop))


def _limit(seconds: float) -> str:
    return f"it ran past its time limit of {seconds:g} s"


# --- Reading the verdicts --------------------------------------------------------------


def grade_notebook(path: Path, time_limit: float = TIME_LIMIT, chapter: str = "") -> Graded:
    """Run one file and read every check cell's verdict; a file that is no notebook, or
    a notebook that crashes or hangs, becomes rows that say so."""
    nb, problem, detail = load(path)
    chapter = chapter_of(path, nb, chapter)
    expected = list(exercises_of(chapter))
    if nb is None:
        rows = [Row(name, d, problem, detail) for name, d in expected]
        return Graded(path, chapter, rows, problem, detail)
    nb, stop = run_isolated(path, time_limit)
    found: dict[str, Row] = {}
    for index, cell in enumerate(nb.cells):
        if is_check_cell(cell):
            name = checked_name(cell)
            found.setdefault(name, _verdict(cell, name, index, stop, _badge(nb, index)))
    rows = []
    for name, difficulty in expected:  # the source's difficulty over the badge's
        row = found.pop(name, None) or Row(name, difficulty, MISSING, "no check cell for it")
        row.difficulty = difficulty
        rows.append(row)
    rows += found.values()  # check cells for exercises the source does not list
    return Graded(path, chapter, rows, stop.get("status", ""), stop.get("detail", ""))


def _verdict(cell: nbformat.NotebookNode, name: str, index: int, stop: dict, d: int) -> Row:
    errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")
    if errors:
        lines = [line.strip() for line in errors[0].evalue.splitlines() if line.strip()]
        if errors[0].ename not in STATUS_OF:  # the cell itself broke (a NameError, say)
            return Row(name, d, FAILED, f"{errors[0].ename}: {lines[0] if lines else ''}")
        heading, diagnosis = (lines + ["", ""])[:2]
        case = heading.split(" — ", 1)[1] if " — " in heading else ""
        message = " — ".join(part for part in [case, diagnosis] if part)
        return Row(name, d, STATUS_OF[errors[0].ename], message)
    if stop and index >= stop["cell"]:
        return Row(name, d, stop["status"], stop["detail"])
    first = text.strip().splitlines()[0] if text.strip() else ""
    if cell.get("execution_count") is not None and first.startswith(f"✓ {name} passed"):
        return Row(name, d, PASSED, first.removeprefix("✓ "))
    return Row(name, d, FAILED, "the check cell ran but printed no verdict")


def _badge(nb: nbformat.NotebookNode, index: int) -> int:
    """The difficulty the exercise's badge shows (●●○○○), read from the notebook itself."""
    for cell in reversed(nb.cells[:index]):
        if cell.cell_type == "markdown" and "**Difficulty**" in cell.source:
            dots = cell.source.split("**Difficulty**", 1)[1].split("·")[0]
            return dots.count("●") or DEFAULT_DIFFICULTY
    return DEFAULT_DIFFICULTY


# --- The learner's progress view -------------------------------------------------------


def notebooks_in(paths: Sequence[Path]) -> list[Path]:
    """Notebooks named, and those in folders named (but not `*.updated.ipynb`, the generator's
    new version of a notebook the learner edited)."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.glob("*.ipynb") if not p.name.endswith(".updated.ipynb")
            )
        else:
            found.append(path)
    return found


def dots(difficulty: int) -> str:
    return "●" * difficulty + "○" * max(0, 5 - difficulty)


def progress_text(graded: Graded) -> str:
    lines = [f"{graded.chapter or graded.path.stem}  ({graded.path})"]
    if graded.problem:
        lines.append(f"  ✗ {graded.problem}: {graded.detail}")
    width = max([len(row.exercise) for row in graded.rows] + [len("exercise")])
    lines.append(f"  {'exercise':<{width}}  difficulty  result")
    for row in graded.rows:
        result = f"{MARKS.get(row.status, '✗')} {row.status}"
        if row.status == FAILED:
            result += f": {row.message}"
        lines.append(f"  {row.exercise:<{width}}  {dots(row.difficulty):<10}  {result}")
    lines.append(f"  {graded.passed} of {len(graded.rows)} exercises pass")
    return "\n".join(lines)


def progress_markdown(results: list[Graded]) -> str:
    lines = ["## Exercises", "", "| chapter | exercises passed |", "|---|---|"]
    lines += [f"| {g.chapter or g.path.name} | {g.passed} of {len(g.rows)} |" for g in results]
    passed, total = sum(g.passed for g in results), sum(len(g.rows) for g in results)
    lines += ["", f"**{passed} of {total} exercises pass.**"]
    for graded in results:
        lines += ["", f"### {graded.chapter or graded.path.name}", ""]
        if graded.problem:
            lines += [f"**{graded.problem}**: {_cell(graded.detail)}", ""]
        lines += ["| exercise | difficulty | result | message |", "|---|---|---|---|"]
        for row in graded.rows:
            mark = MARKS.get(row.status, "✗")
            message = row.message if row.status not in (PASSED, NOT_STARTED) else ""
            lines.append(
                f"| `{row.exercise}` | {dots(row.difficulty)} | {mark} {row.status} | {_cell(message)} |"
            )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def progress(
    paths: Sequence[Path], time_limit: float, markdown: Path | None, unfinished_ok: bool = False
) -> int:
    results = []
    for path in notebooks_in(paths):
        results.append(grade_notebook(path, time_limit))
        print(progress_text(results[-1]), end="\n\n", flush=True)
    width = max([len(g.chapter or g.path.name) for g in results] + [len("chapter")])
    print(f"{'chapter':<{width}}  exercises passed")
    for graded in results:
        mark = "✓" if graded.all_pass else "✗"
        print(
            f"{graded.chapter or graded.path.name:<{width}}  {mark} {graded.passed} of {len(graded.rows)}"
        )
    passed, total = sum(g.passed for g in results), sum(len(g.rows) for g in results)
    done = bool(results) and all(g.all_pass for g in results)
    if markdown:
        with open(markdown, "a", encoding="utf-8") as out:
            out.write(progress_markdown(results))
    if done:
        print(f"All {total} exercises pass.")
        return 0
    if unfinished_ok:
        print(
            f"{passed} of {total} exercises pass: keep going. (`make grade STRICT=1`, as CI "
            "runs it, exits with status 1 until all do.)"
        )
        return 0
    print(f"{passed} of {total} exercises pass: the exit status is 1 until all do.")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course.grading.grade",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", type=Path, help=f"default: {EXERCISES.name}/")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, help="seconds a notebook")
    parser.add_argument("--markdown", type=Path, help="append the tables in Markdown to this file")
    parser.add_argument(
        "--unfinished-ok",
        action="store_true",
        help="exit 0 when some exercise does not pass yet (a crash still exits non-zero)",
    )
    parser.add_argument("--run-one", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        _run_one(*args.run_one, args.time_limit)
        return 0
    return progress(args.paths or [EXERCISES], args.time_limit, args.markdown, args.unfinished_ok)


if __name__ == "__main__":
    sys.exit(main())
