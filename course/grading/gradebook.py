"""An instructor's gradebook: `python -m course.grading.gradebook SUBMISSIONS --out DIR`.

SUBMISSIONS holds one entry per learner: a folder of their notebooks (`00_toolkit.ipynb`,
..., matched to chapters by the stem of their names), or a single notebook (`ada.ipynb`,
matched by its metadata or by the checks it runs). Each notebook runs on a copy, in a process
of its own, within `--time-limit` seconds; `--jobs N` runs N at once. The files are never
written. DIR receives `gradebook.csv` and `gradebook.json`: one row per learner and exercise
(its status, the first line of the check's message, points earned and possible) and a
`TOTAL` row per learner. A file that is empty, malformed, not a notebook, never ends or kills
its kernel gets rows that say so; it never stops the batch.

The assignment is the chapters named with `--chapter STEM` (repeatable), or else every
chapter someone submitted. An exercise is worth its difficulty (1 to 5, the `:difficulty:`
of its `{exercise}` in notebooks/STEM.md) unless `--points TABLE` says otherwise: a CSV with
columns `exercise,points` and optionally `chapter`, or a JSON object `{"exercise": points}`
or `{"chapter stem": {"exercise": points}}`.
"""

import argparse
import csv
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from course.grading.grade import (
    MISSING,
    PASSED,
    TIME_LIMIT,
    Graded,
    exercises_of,
    grade_notebook,
)

COLUMNS = ["learner", "chapter", "exercise", "status", "points", "max_points", "message", "file"]
Table = dict[tuple[str, str], float]


def submissions(folder: Path) -> dict[str, list[Path]]:
    """Each learner's files: a folder's (hidden ones such as .ipynb_checkpoints left out), or
    a single file, named after its stem."""
    learners: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = [
                p
                for p in sorted(entry.rglob("*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(entry).parts)
            ]
            learners.setdefault(entry.name, []).extend(files)
        else:
            learners.setdefault(entry.name.split(".")[0], []).append(entry)
    return learners


def read_points(path: Path | None) -> Table:
    """An instructor's points per exercise, by (chapter stem or "", exercise)."""
    if path is None:
        return {}
    table: Table = {}
    if path.suffix == ".json":
        for key, value in json.loads(path.read_text(encoding="utf-8")).items():
            if isinstance(value, dict):
                table.update({(key, name): float(p) for name, p in value.items()})
            else:
                table[("", key)] = float(value)
        return table
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            table[((row.get("chapter") or "").strip(), row["exercise"].strip())] = float(
                row["points"]
            )
    return table


def points(table: Table, chapter: str, exercise: str, difficulty: int) -> float:
    return table.get((chapter, exercise), table.get(("", exercise), float(difficulty)))


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def learner_rows(
    learner: str, files: list[Path], graded: dict[Path, Graded], chapters: list[str], table: Table
) -> list[dict]:
    rows: list[dict] = []

    def row(chapter, exercise, status, earned, possible, message, file):
        values = [learner, chapter, exercise, status, _number(earned), _number(possible)]
        values += [message, str(file)]
        rows.append(dict(zip(COLUMNS, values, strict=True)))

    by_chapter: dict[str, Graded] = {}
    ordered = sorted(files, key=lambda p: (p.stem != graded[p].chapter, p.name))
    for path in ordered:
        g = graded[path]
        if g.chapter in chapters and g.chapter not in by_chapter:
            by_chapter[g.chapter] = g
        elif g.chapter in chapters:
            other = by_chapter[g.chapter].path.name
            row(g.chapter, "", "ignored", 0, 0, f"{other} was graded for this chapter", path)
        elif g.chapter:
            row(g.chapter, "", "ignored", 0, 0, "this chapter is not in the assignment", path)
        else:
            what = g.detail or "it matches no chapter by its name, its metadata or its checks"
            row("", "", g.problem or "unknown chapter", 0, 0, what, path)
    for chapter in chapters:
        g = by_chapter.get(chapter)
        if g is None:
            for name, difficulty in exercises_of(chapter):
                worth = points(table, chapter, name, difficulty)
                row(chapter, name, MISSING, 0, worth, "no notebook for this chapter", "")
            continue
        for r in g.rows:
            worth = points(table, chapter, r.exercise, r.difficulty)
            earned = worth if r.status == PASSED else 0
            row(chapter, r.exercise, r.status, earned, worth, r.message, g.path)
    return rows


def total(learner: str, rows: list[dict]) -> dict:
    graded = [r for r in rows if r["exercise"]]
    passed = sum(r["status"] == PASSED for r in graded)
    return {
        "learner": learner,
        "chapter": "",
        "exercise": "TOTAL",
        "status": f"{passed} of {len(graded)} passed",
        "points": _number(sum(r["points"] for r in graded)),
        "max_points": _number(sum(r["max_points"] for r in graded)),
        "message": "; ".join(f"{r['file']}: {r['status']}" for r in rows if not r["exercise"]),
        "file": "",
    }


def build(
    folder: Path,
    out: Path,
    time_limit: float,
    chapters: list[str] | None = None,
    table: Table | None = None,
    jobs: int = 1,
) -> dict:
    """Grade every learner's files and write out/gradebook.csv and out/gradebook.json."""
    learners = submissions(folder)
    files = [path for paths in learners.values() for path in paths]

    def one(path: Path) -> Graded:
        try:
            return grade_notebook(path, time_limit)
        except Exception as error:  # whatever happens to one file, the batch goes on
            return Graded(path, "", [], "error", f"grading failed: {type(error).__name__}: {error}")

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        graded = dict(zip(files, pool.map(one, files), strict=True))
    chapters = chapters or sorted({g.chapter for g in graded.values() if g.chapter})
    book = {"time_limit_s": time_limit, "chapters": chapters, "learners": []}
    csv_rows = []
    for learner, paths in learners.items():
        rows = learner_rows(learner, paths, graded, chapters, table or {})
        for r in rows:  # files named as in the submissions folder
            r["file"] = r["file"] and Path(r["file"]).relative_to(folder).as_posix()
        summary = total(learner, rows)
        csv_rows += rows + [summary]
        book["learners"].append(
            {k: summary[k] for k in ["learner", "points", "max_points", "status"]} | {"rows": rows}
        )
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows)
    (out / "gradebook.json").write_text(json.dumps(book, indent=1, ensure_ascii=False) + "\n")
    return book


def summary_text(book: dict) -> str:
    width = max([len(x["learner"]) for x in book["learners"]] + [len("learner")])
    lines = [f"{'learner':<{width}}  points     exercises"]
    for x in book["learners"]:
        lines.append(
            f"{x['learner']:<{width}}  {x['points']:>3} / {x['max_points']:<3}  {x['status']}"
        )
    return "\n".join(lines)


def summary_markdown(book: dict) -> str:
    lines = [f"## Gradebook: {', '.join(book['chapters'])}", ""]
    lines += ["| learner | points | exercises |", "|---|---|---|"]
    lines += [
        f"| {x['learner']} | {x['points']} / {x['max_points']} | {x['status']} |"
        for x in book["learners"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course.grading.gradebook",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("submissions", type=Path, help="one folder or notebook per learner")
    parser.add_argument("--out", type=Path, default=Path("gradebook"), help="gradebook folder")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, help="seconds a notebook")
    parser.add_argument("--points", type=Path, help="CSV or JSON table: points per exercise")
    parser.add_argument("--chapter", action="append", default=[], help="assigned chapter stems")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks graded at once")
    parser.add_argument("--markdown", type=Path, help="append the summary in Markdown to this file")
    args = parser.parse_args(argv)
    book = build(
        args.submissions,
        args.out,
        args.time_limit,
        args.chapter,
        read_points(args.points),
        args.jobs,
    )
    print(summary_text(book))
    print(f"wrote {args.out / 'gradebook.csv'} and {args.out / 'gradebook.json'}")
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write(summary_markdown(book))
    return 0


if __name__ == "__main__":
    sys.exit(main())
