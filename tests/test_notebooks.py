"""Generated notebooks are current, exercise notebooks fail exactly at their checks, and
the generator never overwrites a notebook someone edited."""

import json
import re

import nbformat
import pytest

from course import notebooks
from course.grading import grade
from course.notebooks import EXERCISES, all_stems

STEMS = all_stems()


def test_every_chapter_has_a_source():
    assert STEMS, "no notebooks/NN_*.md sources found"


def test_generated_notebooks_are_current(capsys):
    assert notebooks.check(STEMS) == 0, capsys.readouterr().out


def test_notebooks_store_the_kernel_as_jupyter_describes_it():
    # JupyterLab rewrites both on opening a notebook; any difference shows it as unsaved.
    # Only Python's version, as the machine that generated them had it, may differ.
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(notebooks.KERNELSPEC["name"])
    assert notebooks.KERNELSPEC["display_name"] == spec.display_name
    assert notebooks.KERNELSPEC["language"] == spec.language
    for path in [*EXERCISES.glob("*.ipynb"), *notebooks.SOLVED.glob("*.ipynb")]:
        metadata = nbformat.read(path, as_version=4).metadata
        assert metadata.kernelspec == notebooks.KERNELSPEC, path
        stored = {k: v for k, v in metadata.language_info.items() if k != "version"}
        expected = {k: v for k, v in IPythonKernel.language_info.items() if k != "version"}
        assert stored == expected, path


def test_every_link_to_a_file_opens_from_where_its_notebook_sits():
    # JupyterLab (rooted at the repository by `make lab`) opens an exercise notebook's
    # `../book/NN.md`; the book resolves a solved notebook's `../NN.md`.
    linked = 0
    for path in [*EXERCISES.glob("*.ipynb"), *notebooks.SOLVED.glob("*.ipynb")]:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", cell.source):
                if "://" in target or target.startswith("mailto:"):
                    continue
                assert (path.parent / target).exists(), f"{path.name} links to {target}"
                linked += 1
    assert linked >= 2 * len(STEMS) - 4  # each chapter but the first links its prose page


def test_a_figure_with_two_y_axes_keeps_its_legend_off_them_and_fixes_its_ticks():
    # JupyterLab's plotly puts a default legend over the right axis's labels, and picks
    # ticks of its own (-0.214, 0.015, ...) unless they are fixed.
    found = 0
    for path in notebooks.SOLVED.glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            for output in cell.get("outputs", []):
                figure = output.get("data", {}).get("application/vnd.plotly.v1+json")
                overlaid = figure and figure.get("layout", {}).get("yaxis2", {}).get("overlaying")
                if not overlaid:  # subplots have a yaxis2 of their own, beside the first
                    continue
                layout = figure["layout"]
                assert layout.get("legend", {}).get("orientation") == "h", path.name
                assert all("dtick" in layout[axis] for axis in ("yaxis", "yaxis2")), path.name
                found += 1
    assert found  # chapter 3's GELU figure


def test_solved_notebooks_are_stored_executed():
    for stem in STEMS:
        nb = nbformat.read(notebooks.SOLVED / f"{stem}.ipynb", as_version=4)
        unexecuted = [
            c.id for c in nb.cells if notebooks.runs_when_stored(c) and not c.execution_count
        ]
        assert not unexecuted, f"{stem}: run `make notebooks` (cells {unexecuted} not executed)"


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_exercise_notebook_fails_exactly_at_its_check_cells(stem):
    # Executed as "Run All" does: it stops at any error, except in a cell tagged
    # raises-exception, so reaching the end proves the notebook runs top to bottom.
    # Then, in the same kernel, as a learner would: every check cell run again (each
    # name now holds the reference the notebook fell back to), then one exercise solved.
    nb = nbformat.read(EXERCISES / f"{stem}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    check_cells = [c for c in code if notebooks.is_check_cell(c)]
    assert check_cells
    rerun = [_code(c.source, raises=True) for c in check_cells]
    chapter, first = _first_exercise(stem)
    solved = [
        _code(notebooks.solution_source(chapter, first)),
        _code(f"check_{notebooks.snake_case(first)}({first})"),
    ]
    summaries = [_code(code[-1].source), _code(code[-1].source)]
    nb.cells += rerun + summaries[:1] + solved + summaries[1:]
    notebooks.execute(nb, EXERCISES)

    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if cell in check_cells:
            assert errors, f"{stem}: the check `{cell.source}` passed on the stub"
            assert errors[0].ename == "NotStarted", errors[0]
            assert "not implemented yet" in errors[0].evalue, errors[0].evalue
        else:
            assert not errors, f"{stem}: cell {cell.id} failed:\n{cell.source}\n{errors}"
    fallbacks = [c for c in code if " = reference_if_failed(" in c.source]
    assert all("has not passed its check yet" in _text(c) for c in fallbacks)
    n = len(check_cells)
    after_run_all = _text(code[-1])
    assert after_run_all.count("○ not started") == n, after_run_all
    assert f"0/{n} exercises" in after_run_all

    for cell in rerun:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, f"{stem}: `{cell.source}` passed the reference the notebook fell back to"
        assert "fell back to, not your code" in errors[0].evalue, errors[0].evalue
        assert "Run the cell that defines your" in errors[0].evalue
    after_rerun = _text(summaries[0])
    assert after_rerun.count("→ its check was handed the reference") == n, after_rerun
    assert f"0/{n} exercises" in after_rerun

    assert _text(solved[1]).startswith(f"✓ {first} passed"), solved[1].outputs
    assert f"1/{n} exercises" in _text(summaries[1])


def _first_exercise(stem: str) -> tuple[str, str]:
    front, blocks = notebooks.parse((notebooks.SOURCES / f"{stem}.md").read_text())
    return front["chapter"], next(b.name for b in blocks if b.kind == "exercise")


def _code(source: str, raises: bool = False):
    cell = nbformat.v4.new_code_cell(source)
    if raises:
        cell.metadata["tags"] = ["raises-exception"]
    return cell


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """The generator pointed at a copy of chapter 0's source and empty output folders."""
    (tmp_path / "notebooks").mkdir()
    source = notebooks.SOURCES / f"{STEMS[0]}.md"
    (tmp_path / "notebooks" / source.name).write_text(source.read_text())
    monkeypatch.setattr(notebooks, "SOURCES", tmp_path / "notebooks")
    monkeypatch.setattr(notebooks, "EXERCISES", tmp_path / "exercises")
    monkeypatch.setattr(notebooks, "SOLVED", tmp_path / "solved")
    return tmp_path


def test_generator_leaves_an_edited_notebook_alone(sandbox):
    notebooks.build(STEMS[:1], run=False)
    exercise = sandbox / "exercises" / f"{STEMS[0]}.ipynb"
    nb = json.loads(exercise.read_text())
    nb["cells"][2]["source"] = ["my own work\n"]
    exercise.write_text(json.dumps(nb))
    edited = exercise.read_text()

    (sandbox / "notebooks" / f"{STEMS[0]}.md").write_text(
        (sandbox / "notebooks" / f"{STEMS[0]}.md").read_text() + "\nA new closing paragraph.\n"
    )
    notebooks.build(STEMS[:1], run=False)

    assert exercise.read_text() == edited
    updated = nbformat.read(exercise.with_suffix(".updated.ipynb"), as_version=4)
    assert "A new closing paragraph." in "".join(c.source for c in updated.cells)


def test_generator_refreshes_an_unedited_notebook(sandbox):
    notebooks.build(STEMS[:1], run=False)
    source = sandbox / "notebooks" / f"{STEMS[0]}.md"
    source.write_text(source.read_text() + "\nA new closing paragraph.\n")
    notebooks.build(STEMS[:1], run=False)
    exercise = sandbox / "exercises" / f"{STEMS[0]}.ipynb"
    assert "A new closing paragraph." in exercise.read_text()
    assert not exercise.with_suffix(".updated.ipynb").exists()


def test_stub_keeps_signature_docstring_and_constructor():
    source = notebooks.stub_source("toolkit", "frobenius_inner", None)
    assert source.startswith("def frobenius_inner(")
    assert '"""' in source and source.rstrip().endswith("raise NotImplementedError()")


def test_snake_case_names_checkers_as_the_course_map_does():
    assert notebooks.snake_case("PosEmbed") == "pos_embed"
    assert notebooks.snake_case("BPETokenizer") == "bpe_tokenizer"
    assert notebooks.snake_case("LayerNorm") == "layer_norm"
    assert notebooks.snake_case("frobenius_inner") == "frobenius_inner"


@pytest.mark.slow
def test_grade_fails_an_untouched_exercise_notebook(capsys):
    assert grade.main([str(EXERCISES / f"{STEMS[0]}.ipynb")]) == 1
    out = capsys.readouterr().out
    assert "○ not started" in out and " 0 of " in out and "✓" not in out


@pytest.mark.slow
def test_grade_passes_a_solved_notebook_and_leaves_it_unchanged(capsys):
    solved = notebooks.SOLVED / f"{STEMS[0]}.ipynb"
    before = solved.read_text()
    assert grade.main([str(solved)]) == 0
    assert "✗" not in capsys.readouterr().out
    assert solved.read_text() == before


def test_exercise_hints_come_in_one_or_two_levels():
    source = (
        "---\nchapter: toolkit\n---\n# T\n\n"
        "```{exercise} matmul\n:difficulty: 1\n:importance: 5\n:minutes: 5\n"
        'Name the shared axis alike in both inputs.\n:answer:\n`"m k, k n -> m n"`\n```\n\n'
        "```{exercise} dot\n:difficulty: 1\n:importance: 5\n:minutes: 5\nOne level only.\n```\n"
    )
    front, blocks = notebooks.parse(source)
    front["stem"] = "00_test"
    for solved in (False, True):
        nb = notebooks.render(front, blocks, solved=solved)
        badges = [c.source for c in nb.cells if c.source.startswith("> **Difficulty**")]
        two, one = badges
        assert two.index("<summary>Hint</summary>") < two.index("<summary>Answer</summary>")
        idea, answer = two.split("<summary>Answer</summary>")
        assert "shared axis" in idea and "m k, k n" not in idea and "m k, k n" in answer
        assert ":answer:" not in two
        assert one.count("<details>") == 1 and "<summary>Hint</summary>" in one
    with pytest.raises(ValueError, match="answer"):
        notebooks.hints("idea\n:answer:\n")


@pytest.mark.parametrize("stem", STEMS)
def test_every_exercise_offers_the_idea_then_the_answer(stem):
    """The introduction promises each exercise two hints: the idea, then the answer."""
    _, blocks = notebooks.parse((notebooks.SOURCES / f"{stem}.md").read_text(encoding="utf-8"))
    exercises = [block for block in blocks if block.kind == "exercise"]
    one_level = [b.name for b in exercises if notebooks.ANSWER not in b.text.splitlines()]
    assert not one_level, f"{stem}: exercises with a hint but no answer: {one_level}"
