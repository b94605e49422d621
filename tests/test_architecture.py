"""The repository's structure: dependencies flow one way (solutions, then checks, then course),
and no source file grows past what a reader takes in at once."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("solutions", "checks", "course")
# What each package may import of the course's own packages.
ALLOWED = {"solutions": {"solutions"}, "checks": {"checks", "solutions"}, "course": set(PACKAGES)}
MAX_LINES = 450


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement of `path` names, inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_flow_one_way(package):
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources(package)
        for module in sorted(imported_modules(path))
        if module.split(".")[0] in PACKAGES and module.split(".")[0] not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_solutions_read_no_data_of_the_tools():
    """The reference's data lives beside it: no path into course/ from solutions/ or checks/."""
    wrong = [
        str(path.relative_to(ROOT))
        for package in ("solutions", "checks")
        for path in sources(package)
        if 'files("course")' in path.read_text(encoding="utf-8")
    ]
    assert not wrong


def test_the_gradebook_builds_on_the_grader_never_the_reverse():
    assert "course.grading.grade" in imported_modules(ROOT / "course/grading/gradebook.py")
    assert not any(
        "gradebook" in module for module in imported_modules(ROOT / "course/grading/grade.py")
    )


def test_chapters_load_shipped_models_from_loaders_not_trainers():
    """A chapter imports a shipped model from its loader (course/models/<model>.py); it may run
    a trainer's function, but never reads a model or its log through a trainer module."""
    loaders = {"load_text_model", "load_log", "load_model", "load_json", "load_results"}
    wrong = []
    for path in [*(ROOT / "notebooks").glob("*.md"), *(ROOT / "book").glob("*.md")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("from course.models.train_") and " import " in line:
                names = {name.strip() for name in line.split(" import ")[1].split(",")}
                if names & loaders:
                    wrong.append(f"{path.name}: {line}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_source_file_is_too_long_to_read(package):
    long = {
        str(path.relative_to(ROOT)): n
        for path in sources(package)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"
