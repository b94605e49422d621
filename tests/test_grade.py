"""The grader: a learner's progress view, and an instructor's gradebook over a class whose
submissions pass, fail, crash their kernel, hang, are empty, malformed or not notebooks.

The submissions are tiny notebooks that run chapter 0's real checks on one or two
exercises, under a time limit of a few seconds, so that the whole file runs in seconds.
"""

import csv
import hashlib
import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from course.grading import grade, gradebook

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "00_toolkit"
TIME_LIMIT = 20.0  # seconds a notebook: importing torch takes a few on a busy machine
SETUP = "from checks import reference_if_failed, summary\nfrom checks.toolkit import *"
MATMUL = "def matmul(A, B):\n    return A @ B"
DOT = "def dot(x, y):\n    return (x * y).sum(-1)"
STUB = "def dot(x, y):\n    raise NotImplementedError()"
SCALED = "def matmul(A, B):\n    return 2 * (A @ B)"  # a realistic slip: a stray factor


def notebook(*sources: str, source_md: str | None = None) -> str:
    """A notebook of code cells; `check_*` cells are tagged raises-exception as the course's."""
    cells = []
    for source in sources:
        cell = nbformat.v4.new_code_cell(source)
        if source.startswith("check_"):
            cell.metadata["tags"] = ["raises-exception"]
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    if source_md:
        nb.metadata["residual_stream"] = {"source": source_md}
    return nbformat.writes(nb)


PASSING = notebook(SETUP, MATMUL, "check_matmul(matmul)", DOT, "check_dot(dot)")
FAILING = notebook(SETUP, SCALED, "check_matmul(matmul)", STUB, "check_dot(dot)")
CRASHES = (SETUP, MATMUL, "check_matmul(matmul)", "import os\nos._exit(1)", DOT, "check_dot(dot)")
HANGING = notebook(
    SETUP, MATMUL, "check_matmul(matmul)", "import time\ntime.sleep(600)", DOT, "check_dot(dot)"
)
# Graded two at a time, in this order: the hanging one waits out its time limit while
# the others run.
SUBMISSIONS = {
    "ada/00_toolkit.ipynb": PASSING,
    "amy/00_toolkit.ipynb": HANGING,
    "ben/00_toolkit.ipynb": FAILING,
    "dan/00_toolkit.ipynb": "",
    "eve/00_toolkit.ipynb": '{"cells": [',
    "fay.docx": "not a notebook",
    # One notebook for a learner, matched to its chapter by its metadata.
    "hal.ipynb": notebook(*CRASHES, source_md="notebooks/00_toolkit.md"),
    "ivy/.ipynb_checkpoints/00_toolkit-checkpoint.ipynb": FAILING,  # hidden: not graded
    "ivy/notes.txt": "my notes",
}


def write(folder, files: dict[str, str]):
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def fingerprint(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        + str(p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The gradebook of the class above, its rows by (learner, exercise), its folder, the
    submissions' fingerprints before and after, and each file as graded, by its name."""
    root = tmp_path_factory.mktemp("class")
    folder = write(root / "submissions", SUBMISSIONS)
    before = fingerprint(folder)
    files = {}

    def recorded(path, time_limit):
        files[path.relative_to(folder).as_posix()] = result = grade.grade_notebook(path, time_limit)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gradebook, "grade_notebook", recorded)
        book = gradebook.build(folder, root / "out", TIME_LIMIT, jobs=4)
    rows = {(r["learner"], r["exercise"]): r for x in book["learners"] for r in x["rows"]}
    return book, rows, root, before, fingerprint(folder), files


def test_gradebook_never_writes_a_submission(graded):
    _, _, _, before, after, _ = graded
    assert before == after


def test_a_passing_submission_earns_each_exercise_its_difficulty(graded):
    book, rows, *_ = graded
    assert rows["ada", "matmul"]["status"] == "passed", rows["ada", "matmul"]
    assert rows["ada", "matmul"]["message"].startswith("matmul passed")
    assert rows["ada", "dot"]["status"] == "passed", rows["ada", "dot"]
    assert rows["ada", "matmul"]["points"] == rows["ada", "matmul"]["max_points"] == 1
    assert rows["ada", "matmul"]["file"] == "ada/00_toolkit.ipynb"
    # Every exercise of the chapter has a row; those without a check cell earn nothing.
    exercises = [name for name, _ in grade.exercises_of(CHAPTER)]
    assert [r["exercise"] for r in book["learners"][0]["rows"]] == exercises
    assert rows["ada", "query_key_dots"]["status"] == "missing", rows["ada", "query_key_dots"]
    assert rows["ada", "query_key_dots"]["max_points"] == 2  # its difficulty
    ada = book["learners"][0]
    assert ada["points"] == 2 and ada["status"] == f"2 of {len(exercises)} passed"
    assert ada["max_points"] == sum(d for _, d in grade.exercises_of(CHAPTER))


def test_a_failing_submission_gets_the_checks_diagnosis(graded):
    _, rows, *_ = graded
    matmul, dot = rows["ben", "matmul"], rows["ben", "dot"]
    assert matmul["status"] == "failed" and matmul["points"] == 0
    assert matmul["message"].startswith("case: ") and "\n" not in matmul["message"]
    assert "wrong values" in matmul["message"]  # the diagnosis's first line
    assert dot["status"] == "not started"


def test_a_kernel_crash_keeps_what_passed_before_it(graded):
    _, rows, *_ = graded
    assert rows["hal", "matmul"]["status"] == "passed", rows["hal", "matmul"]
    assert rows["hal", "dot"]["status"] == "kernel died", rows["hal", "dot"]
    assert "cell 4" in rows["hal", "dot"]["message"]


def test_a_hanging_submission_stops_at_the_time_limit(graded):
    _, rows, *_ = graded
    assert rows["amy", "matmul"]["status"] == "passed", rows["amy", "matmul"]
    assert rows["amy", "dot"]["status"] == "timed out", rows["amy", "dot"]
    assert "time limit" in rows["amy", "dot"]["message"]


def test_empty_malformed_and_non_notebook_submissions_say_so(graded):
    book, rows, *_ = graded
    assert rows["dan", "matmul"]["status"] == "empty", rows["dan", "matmul"]
    assert rows["eve", "matmul"]["status"] == "malformed", rows["eve", "matmul"]
    assert "cannot be read as a notebook" in rows["eve", "matmul"]["message"]
    assert rows["fay", ""]["status"] == "not a notebook", rows["fay", ""]
    # fay submitted nothing for the chapter: every exercise is missing, none earned.
    fay = next(x for x in book["learners"] if x["learner"] == "fay")
    assert fay["points"] == 0 and fay["max_points"] > 0
    assert rows["ivy", ""]["status"] == "not a notebook", rows[
        "ivy", ""
    ]  # notes.txt, beside a notebook
    assert rows["ivy", "matmul"]["status"] == "missing", rows[
        "ivy", "matmul"
    ]  # the hidden checkpoint is not graded


def test_a_single_notebook_is_matched_by_its_metadata(graded):
    _, rows, *_ = graded
    assert rows["hal", "matmul"]["status"] == "passed", rows["hal", "matmul"]
    assert rows["hal", "matmul"]["chapter"] == CHAPTER


def test_gradebook_files_hold_a_row_per_learner_and_exercise_and_totals(graded):
    book, _, root, *_ = graded
    learners = ["ada", "amy", "ben", "dan", "eve", "fay", "hal", "ivy"]
    assert [x["learner"] for x in book["learners"]] == learners
    with open(root / "out" / "gradebook.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == gradebook.COLUMNS
    totals = [r for r in table if r["exercise"] == "TOTAL"]
    assert [r["learner"] for r in totals] == learners
    n = len(grade.exercises_of(CHAPTER))
    for learner in learners:
        exercise_rows = [
            r for r in table if r["learner"] == learner and r["exercise"] not in ("", "TOTAL")
        ]
        assert len(exercise_rows) == n, learner
    points = {r["learner"]: int(r["points"]) for r in totals}
    assert points == {
        "ada": 2,
        "amy": 1,
        "ben": 0,
        "dan": 0,
        "eve": 0,
        "fay": 0,
        "hal": 1,
        "ivy": 0,
    }
    stored = json.loads((root / "out" / "gradebook.json").read_text())
    assert stored["chapters"] == [CHAPTER]
    assert [x["points"] for x in stored["learners"]] == [points[x] for x in learners]


def test_points_table_overrides_difficulty(tmp_path):
    (tmp_path / "points.csv").write_text(
        "chapter,exercise,points\n00_toolkit,matmul,10\n,dot,0.5\n"
    )
    (tmp_path / "points.json").write_text('{"dot": 0.5, "00_toolkit": {"matmul": 10}}')
    for name in ["points.csv", "points.json"]:
        table = gradebook.read_points(tmp_path / name)
        assert gradebook.points(table, CHAPTER, "matmul", 1) == 10
        assert gradebook.points(table, CHAPTER, "dot", 1) == 0.5
        assert gradebook.points(table, CHAPTER, "trace", 1) == 1


def test_progress_view_lists_each_exercise_and_fails_until_all_pass(
    graded, tmp_path, monkeypatch, capsys
):
    # The failing notebook as the gradebook ran it (test_notebooks.py runs `make grade`'s
    # command on whole chapters).
    monkeypatch.setattr(
        grade, "grade_notebook", lambda path, limit: graded[-1]["ben/00_toolkit.ipynb"]
    )
    folder = write(tmp_path / "exercises", {"00_toolkit.ipynb": FAILING})
    summary = tmp_path / "summary.md"
    assert grade.main([str(folder), "--markdown", str(summary)]) == 1
    out = capsys.readouterr().out
    assert "✗ failed: case:" in out and "wrong values" in out
    assert "○ not started" in out and "missing" in out
    n = len(grade.exercises_of(CHAPTER))
    assert f"0 of {n} exercises pass" in out
    markdown = summary.read_text()
    assert "| chapter | exercises passed |" in markdown and f"| {CHAPTER} | 0 of {n} |" in markdown
    assert "| `matmul` | ●○○○○ | ✗ failed |" in markdown


def test_progress_view_passes_only_when_every_exercise_does(tmp_path, monkeypatch, capsys):
    rows = [grade.Row("matmul", 1, grade.PASSED), grade.Row("dot", 1, grade.PASSED)]
    graded = grade.Graded(tmp_path / f"{CHAPTER}.ipynb", CHAPTER, rows)
    monkeypatch.setattr(grade, "grade_notebook", lambda path, limit: graded)
    (tmp_path / f"{CHAPTER}.ipynb").write_text(PASSING)
    assert grade.main([str(tmp_path)]) == 0
    assert "All 2 exercises pass." in capsys.readouterr().out
    rows.append(grade.Row("trace", 1, grade.MISSING))
    assert grade.main([str(tmp_path)]) == 1
    assert "2 of 3 exercises pass: the exit status is 1 until all do." in capsys.readouterr().out
    # `make grade` at a learner's terminal: unfinished work is reported, not an error.
    assert grade.main([str(tmp_path), "--unfinished-ok"]) == 0
    assert "2 of 3 exercises pass: keep going." in capsys.readouterr().out


# The grader's statuses: 1 for unfinished work (0 with --unfinished-ok), anything else a crash.
FAKE_TOOL = """#!/bin/sh
echo "ran: $*"
status=${FAKE_STATUS:-0}
case " $* " in *" --unfinished-ok "*) [ "$status" = 1 ] && status=0 ;; esac
exit $status
"""


def _make(target: str, tmp_path, *assignments: str, env: dict | None = None):
    """`make TARGET` of the course's Makefile with a stand-in virtualenv whose python and
    jupyter print their arguments and exit as the grader would (FAKE_STATUS)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    for tool in ["python", "jupyter"]:
        script = venv / "bin" / tool
        script.write_text(FAKE_TOOL)
        script.chmod(0o755)
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "MAKEFLAGS")}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "-o", f"{venv}/.installed", target,
         f"VENV={venv}", *assignments],
        capture_output=True, text=True, env={**environment, **(env or {})},
    )  # fmt: skip


def test_make_grade_fails_on_unfinished_work_only_under_ci_or_strict(tmp_path):
    unfinished = {"FAKE_STATUS": "1"}
    at_terminal = _make("grade", tmp_path, env=unfinished)
    assert at_terminal.returncode == 0 and "--unfinished-ok" in at_terminal.stdout
    assert "Error" not in at_terminal.stderr
    for how in [dict(env={**unfinished, "CI": "true"}), dict(env=unfinished, args=["STRICT=1"])]:
        strict = _make("grade", tmp_path, *how.get("args", []), env=how["env"])
        assert strict.returncode != 0 and "--unfinished-ok" not in strict.stdout
    # A grader that crashed fails make wherever it runs.
    assert _make("grade", tmp_path, env={"FAKE_STATUS": "2"}).returncode != 0


def test_make_lab_allows_root_and_passes_options_on(tmp_path):
    as_root = _make("lab", tmp_path, "LAB_USER_ID=0", "LAB_ARGS=--port 8889 --no-browser")
    assert as_root.returncode == 0, as_root.stderr
    lab = "ran: lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/exercises"
    assert f"{lab} --allow-root --port 8889 --no-browser" in as_root.stdout
    as_user = _make("lab", tmp_path, "LAB_USER_ID=1000")
    assert lab in as_user.stdout and "--allow-root" not in as_user.stdout


def test_progress_view_skips_the_generators_updated_copies(tmp_path):
    write(tmp_path, {"00_toolkit.ipynb": "", "00_toolkit.updated.ipynb": "", "01_x.ipynb": ""})
    assert [p.name for p in grade.notebooks_in([tmp_path])] == ["00_toolkit.ipynb", "01_x.ipynb"]


def test_chapters_are_matched_by_the_stem_of_a_name(tmp_path):
    assert grade.chapter_of(tmp_path / "00_toolkit.ipynb") == CHAPTER
    assert grade.chapter_of(tmp_path / "00_toolkit-ada.ipynb") == CHAPTER
    assert grade.chapter_of(tmp_path / "essay.ipynb") == ""
    # A notebook named otherwise, without the course's metadata: by the checks it runs.
    assert grade.chapter_of(tmp_path / "essay.ipynb", nbformat.reads(PASSING, 4)) == CHAPTER


def test_a_worker_past_its_grace_is_killed_with_its_kernel(tmp_path, monkeypatch):
    # The backstop behind the kernel's own time limit: the whole process tree goes.
    import psutil

    monkeypatch.setattr(grade, "KERNEL_GRACE", 0.0)
    (tmp_path / "00_toolkit.ipynb").write_text(HANGING)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    graded = grade.grade_notebook(tmp_path / "00_toolkit.ipynb", time_limit=1.0)
    assert graded.problem == "timed out"
    statuses = {r.exercise: r.status for r in graded.rows}
    assert statuses["matmul"] == statuses["dot"] == "timed out"
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


def test_instructor_command_line_writes_the_gradebook_and_its_summary(tmp_path, capsys):
    # Submissions that need no kernel, so the command runs in a moment.
    files = {"dan/00_toolkit.ipynb": "", "dan/00_toolkit-old.ipynb": "{", "fay.docx": "essay"}
    folder = write(tmp_path / "class", files)
    points = tmp_path / "points.json"
    points.write_text('{"matmul": 3}')
    summary = tmp_path / "summary.md"
    argv = [str(folder), "--out", str(tmp_path / "out"), "--chapter", CHAPTER]
    argv += ["--points", str(points), "--markdown", str(summary)]
    assert gradebook.main(argv) == 0
    out = capsys.readouterr().out
    assert "dan" in out and "fay" in out and "gradebook.csv" in out
    book = json.loads((tmp_path / "out" / "gradebook.json").read_text())
    difficulty = sum(d for _, d in grade.exercises_of(CHAPTER))
    assert [x["max_points"] for x in book["learners"]] == [difficulty + 2] * 2  # matmul: 1 -> 3
    assert f"| dan | 0 / {difficulty + 2} |" in summary.read_text()
    # Two notebooks for one chapter: the one named exactly after it is graded.
    dan = {r["file"]: r for r in book["learners"][0]["rows"] if r["exercise"] == "matmul"}
    assert (
        list(dan) == ["dan/00_toolkit.ipynb"] and dan["dan/00_toolkit.ipynb"]["status"] == "empty"
    )
    (ignored,) = [r for r in book["learners"][0]["rows"] if r["status"] == "ignored"]
    assert ignored["file"] == "dan/00_toolkit-old.ipynb"
    assert "00_toolkit.ipynb was graded" in ignored["message"]


def check_cell(ename: str, evalue: str) -> nbformat.NotebookNode:
    """A check cell of `dot` as the kernel leaves it when the check raises."""
    cell = nbformat.v4.new_code_cell("check_dot(dot)", execution_count=5)
    cell.outputs = [nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[])]
    return cell


@pytest.mark.parametrize(
    "ename, evalue, status, message",
    [
        (
            "NotStarted",
            "dot — case: x = 2\n  dot is a stub",
            "not started",
            "case: x = 2 — dot is a stub",
        ),
        ("HandedReference", "dot\n  this dot is ours", "handed the reference", "this dot is ours"),
        # The class decides, not the wording: a failure that quotes the stub's words fails.
        (
            "CheckFailed",
            "dot — case: x\n  raised KeyError: 'not implemented yet'",
            "failed",
            "case: x — raised KeyError: 'not implemented yet'",
        ),
        (
            "CheckFailed",
            "dot\n  fell back to, not your code NotImplementedError",
            "failed",
            "fell back to, not your code NotImplementedError",
        ),
        # The cell itself broke before its checker gave a verdict.
        (
            "NameError",
            "name 'dot' is not defined\nmore",
            "failed",
            "NameError: name 'dot' is not defined",
        ),
    ],
)
def test_a_check_cells_verdict_comes_from_the_class_of_its_error(ename, evalue, status, message):
    row = grade._verdict(check_cell(ename, evalue), "dot", 4, {}, 1)
    assert (row.status, row.message) == (status, message)
