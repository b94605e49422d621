"""House rules that keep the course consistent: shape names, checker registry, mirroring."""

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import checks
from checks._core import _EXERCISES
from course.notebooks import SOURCES, all_stems, parse, snake_case

ROOT = Path(__file__).resolve().parent.parent
AXES = {
    "batch",
    "posn",
    "query_posn",
    "key_posn",
    "d_model",
    "n_heads",
    "d_head",
    "d_mlp",
    "d_vocab",
    "n_ctx",
    "n_experts",  # chapter 3's mixture of experts
    "component",  # chapter 5: the parts the residual stream is a sum of
    "layer",  # chapter 5: the points of the stream the logit lens reads
    # chapter 2's scaled_dot_product_attention, named as PyTorch's and CS336's:
    "queries",
    "keys",
    "d_k",
    "d_v",
}
SOLUTION_MODULES = sorted(p for p in (ROOT / "solutions").glob("*.py") if p.stem != "__init__")


def shape_strings(path: Path) -> list[str]:
    """Every shape string of a jaxtyping annotation (`Float[Tensor, "batch posn"]`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):
            name = getattr(node.value, "id", "")
            last = node.slice.elts[-1]
            if name in {"Float", "Int", "Bool", "Shaped"} and isinstance(last, ast.Constant):
                found.append(last.value)
    return found


def einops_patterns(path: Path) -> list[str]:
    """Every string that is an einops pattern ("batch posn d_model -> ..."), wherever it is."""
    return [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[\w\s().,*]*->[\w\s().,*]*", node.value)
    ]


@pytest.mark.parametrize("path", SOLUTION_MODULES, ids=lambda p: p.stem)
def test_shapes_and_einops_patterns_use_the_course_axis_names(path):
    # Chapter 0 is linear algebra on plain matrices: single letters (m n k ...) are its axes.
    for text in shape_strings(path) + einops_patterns(path):
        for axis in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text):
            assert axis in AXES or len(axis) == 1, (
                f"{path.name}: axis {axis!r} in {text!r} is not one of {sorted(AXES)}"
            )


def test_axis_name_test_sees_the_solutions_patterns():
    attention = ROOT / "solutions" / "attention.py"
    assert any("n_heads d_model d_head" in p for p in einops_patterns(attention))
    assert "batch posn d_model" in shape_strings(attention)


def checker_modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(checks.__path__) if not m.name.startswith("_")]


def defines(module: str, name: str) -> bool:
    """Whether solutions/<module>.py defines `name` at top level, where a notebook's
    `{exercise}` and `{given}` directives look for it."""
    for node in ast.parse((ROOT / "solutions" / f"{module}.py").read_text()).body:
        targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if getattr(node, "name", None) == name or name in targets:
            return True
    return False


def exercised_modules() -> set[str]:
    """The solutions modules that hold a notebook's `{exercise}`: each needs its checkers. A
    module a notebook only shows (`{given}`) needs none."""
    found = set()
    for stem in all_stems():
        front, blocks = parse((SOURCES / f"{stem}.md").read_text())
        modules = [m.strip() for m in front["chapter"].split(",")]
        for block in blocks:
            if block.kind == "exercise":
                found.add(next(m for m in modules if defines(m, block.name)))
    return found


def test_checks_mirror_solutions():
    """Every checks module has its solutions module, and every solutions module that holds
    an exercise has its checks module (the reference model's later parts are in solutions/
    before their chapters are)."""
    solutions = {p.stem for p in SOLUTION_MODULES}
    assert set(checker_modules()) <= solutions
    assert exercised_modules() <= set(checker_modules())
    assert {"training", "ddp"} <= exercised_modules()


@pytest.mark.parametrize("name", checker_modules())
def test_checks_module_exports_exactly_its_checkers(name):
    module = importlib.import_module(f"checks.{name}")
    registered = [f"check_{snake_case(ex.name)}" for ex in _EXERCISES.get(name, [])]
    assert sorted(module.__all__) == sorted(registered)


@pytest.mark.parametrize("stem", all_stems())
def test_every_exercise_of_a_notebook_has_its_checker(stem):
    front, blocks = parse((SOURCES / f"{stem}.md").read_text())
    chapter_modules = [m.strip() for m in front["chapter"].split(",")]
    names = [b.name for b in blocks if b.kind == "exercise"]
    assert names, f"{stem} has no exercise"
    for name in names:
        assert any(
            hasattr(importlib.import_module(f"checks.{m}"), f"check_{snake_case(name)}")
            for m in chapter_modules
        ), f"{stem}: no check_{snake_case(name)} for exercise {name}"
