"""The course installs as a package quietly, its wheel holds what the chapters load, and the
English corpus a checkout may have built never ships in it."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_builds_without_warnings_and_holds_the_course_data(tmp_path):
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    tree = tmp_path / "tree"
    for name in listed:
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    # A checkout where `make corpus` ran: its text must stay out of the wheel.
    (tree / "course" / "data" / "english").mkdir()
    (tree / "course" / "data" / "english" / "11.txt.xz").write_bytes(b"a book")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "wheel"), str(tree)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    output = built.stdout + built.stderr
    noisy = [line for line in output.splitlines() if "Warning" in line or "absent" in line]
    assert not noisy, "\n".join(noisy[:10])
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in [
        "course/data/course_model/model.safetensors",
        "course/data/english_books.json",
        "course/data/circuits/induction.safetensors",
        "course/book/static/course.js",
        "solutions/data/vocab.json",
        "checks/_core.py",
    ]:
        assert needed in names, needed
    assert not [n for n in names if n.startswith("course/data/english/")]
