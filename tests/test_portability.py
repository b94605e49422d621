"""Stored outputs hold on any CPU: nbval compares a figure's structure, this file its numbers.

A fresh run of each solved notebook on PyTorch's portable CPU kernels and one thread (the
stand-in for another machine: other kernels change the last bits of floats) must draw every
stored figure with the same structure and the same numbers, to a tolerance far above float32
rounding (about 1e-7 relative) and far below what a reader could see.
"""

import base64
import copy

import nbformat
import numpy as np
import pytest

from course import notebooks
from course.display.plotting import heatmap, is_number_list, show, structure, typed_array

PLOTLY = "application/vnd.plotly.v1+json"
RTOL, ATOL = 1e-4, 1e-6
ANOTHER_CPU = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
STEMS = notebooks.all_stems()


def stored(stem: str) -> nbformat.NotebookNode:
    return nbformat.read(notebooks.SOLVED / f"{stem}.ipynb", as_version=4)


def figures(nb: nbformat.NotebookNode) -> dict[str, list[dict]]:
    """Each compared code cell's figures (plotly JSON), by cell id; nbval's markers respected."""
    return {
        cell.id: [o.data[PLOTLY] for o in cell.outputs if PLOTLY in o.get("data", {})]
        for cell in nb.cells
        if cell.cell_type == "code"
        and not {"nbval-ignore-output", "nbval-skip"} & set(cell.metadata.get("tags", []))
    }


def numbers(spec: dict, path: str = "") -> dict[str, np.ndarray]:
    """Every data array of a figure (typed arrays and lists of numbers), by its path."""
    array = typed_array(spec)
    if array is not None:
        return {path: array}
    if isinstance(spec, dict):
        return {p: a for k, v in spec.items() for p, a in numbers(v, f"{path}.{k}").items()}
    if is_number_list(spec):
        return {path: np.asarray(spec, dtype=float)}
    if isinstance(spec, list):
        return {p: a for i, v in enumerate(spec) for p, a in numbers(v, f"{path}[{i}]").items()}
    return {}


def assert_same_figure(expected: dict, actual: dict, where: str) -> None:
    assert structure(actual) == structure(expected), f"{where}: the figure's structure changed"
    want, got = numbers(expected), numbers(actual)
    assert want.keys() == got.keys(), where
    for path, a in want.items():
        message = f"{where}: {path.lstrip('.')}"
        if a.dtype.kind == "f":
            np.testing.assert_allclose(got[path], a, rtol=RTOL, atol=ATOL, err_msg=message)
        else:
            np.testing.assert_array_equal(got[path], a, err_msg=message)


@pytest.fixture(scope="module")
def fresh_on_another_cpu() -> dict[str, nbformat.NotebookNode]:
    runs = {}
    with pytest.MonkeyPatch.context() as env:
        for name, value in ANOTHER_CPU.items():
            env.setenv(name, value)  # the kernel inherits it before it imports torch
        for stem in STEMS:
            runs[stem] = notebooks.execute(stored(stem), notebooks.SOLVED)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_stored_figures_are_redrawn_on_another_cpu(stem, fresh_on_another_cpu):
    before, after = figures(stored(stem)), figures(fresh_on_another_cpu[stem])
    assert before.keys() == after.keys()
    for cell_id, shown in before.items():
        assert len(after[cell_id]) == len(shown), f"{stem} cell {cell_id}: number of figures"
        for i, (expected, actual) in enumerate(zip(shown, after[cell_id], strict=True)):
            assert_same_figure(expected, actual, f"{stem} cell {cell_id} figure {i}")


def test_only_figures_carry_the_outputs_nbval_skips():
    # nbval skips plotly JSON and HTML everywhere (conftest.py): anything else stored as HTML
    # would go unchecked. A figure's text/plain must describe its JSON, and its HTML must
    # draw the same numbers, in a div whose id is made from the structure alone.
    seen = 0
    for stem in STEMS:
        for cell in stored(stem).cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if not {PLOTLY, "text/html"} & data.keys():
                    continue
                where = f"{stem} cell {cell.id}"
                assert {PLOTLY, "text/html", "text/plain"} <= data.keys(), where
                spec, html = data[PLOTLY], data["text/html"].replace("\\u002f", "/")
                first, _, rest = data["text/plain"].partition("\n")
                assert rest == structure(spec), f"{where}: text/plain is not the structure"
                div_id = first.removeprefix("<figure ").removesuffix(">")
                assert f'id="{div_id}"' in html, where
                for trace in spec["data"]:
                    for value in trace.values():
                        if typed_array(value) is not None:
                            assert value["bdata"] in html, f"{where}: the HTML draws other data"
                seen += 1
    assert seen, "no figure found in the solved notebooks"


def test_figure_comparison_rejects_numbers_beyond_the_tolerance():
    # A stored figure with one entry moved by 1e-3 (invisible at a glance) fails; moved by
    # float32 noise it passes; a changed title fails on structure.
    spec = next(f for stem in STEMS for shown in figures(stored(stem)).values() for f in shown)
    i, key = next(
        (i, k)
        for i, trace in enumerate(spec["data"])
        for k, v in trace.items()
        if typed_array(v) is not None and typed_array(v).dtype.kind == "f"
    )

    def moved(by: float) -> dict:
        changed = copy.deepcopy(spec)
        values = typed_array(spec["data"][i][key]).copy()
        values.flat[values.size // 2] += by
        changed["data"][i][key]["bdata"] = base64.b64encode(values.tobytes()).decode()
        return changed

    assert_same_figure(spec, moved(1e-7), "noise")
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_same_figure(spec, moved(1e-3), "moved")
    retitled = copy.deepcopy(spec)
    retitled["layout"]["title"] = {"text": "another title"}
    with pytest.raises(AssertionError, match="structure changed"):
        assert_same_figure(spec, retitled, "retitled")


def test_figure_id_and_text_ignore_the_floats():
    z = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    a = show(heatmap(z, title="noise"))
    b = show(heatmap(z * np.float32(1 + 1e-6), title="noise"))
    c = show(heatmap(z[:4], title="noise"))
    base = lambda shown: shown.div_id.split("-")[1]  # noqa: E731
    assert base(a) == base(b) and a.div_id != b.div_id  # unique ids for the HTML page
    assert repr(b).partition("\n")[2] == repr(a).partition("\n")[2]
    assert base(c) != base(a)
    assert "float32 array (5, 7)" in repr(a) and "float32 array (4, 7)" in repr(c)


def test_make_test_runs_nbval_again_on_another_cpu():
    makefile = (notebooks.ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    runs = [line for line in recipe.splitlines() if "pytest" in line and "book/solved" in line]
    assert len(runs) == 2, recipe
    assert runs[1].strip().startswith(" ".join(f"{k}={v}" for k, v in ANOTHER_CPU.items()))
