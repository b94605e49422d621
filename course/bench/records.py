"""Where the bench stores the timings that chapters quote."""

import json
from pathlib import Path

from course import DATA

TRAIN_TIMES = DATA / "bpe_train_times.json"
SCALING_TIMES = DATA / "scaling_times.json"


# The training step's speed, as measured on a CPU (which chapter 6b prints) and on a GPU.
SPEED_TIMES = {
    "cpu": DATA / "speed_cpu.json",
    "cuda": DATA / "speed_gpu.json",
}


def store(result: dict, path: Path, use: str, stem: str | None = None) -> None:
    """Store timings that a chapter quotes, and say how to refresh that chapter (`stem`: its
    solved notebook, whose stored outputs quote them; None: a book page, run at each build)."""
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    refresh = (
        f"refresh its solved notebook with `python -m course.notebooks build {stem} --force`"
        if stem
        else "the book runs that page at every build"
    )
    print(f"written to course/data/{path.name}, which {use}: {refresh}")
