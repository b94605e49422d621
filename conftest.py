"""nbval compares a figure by its structure, never by the last bits of its floats.

`course.display.plotting.show` stores a figure three times: plotly's JSON, an HTML fragment holding
the same JSON, and a text/plain summary of its structure. The JSON and the HTML carry the
data's floats, whose last bits depend on the CPU and the thread count, so nbval skips them
(nbval's documented `skip_compare` hook) and compares the summary;
tests/test_portability.py compares the numbers, with a tolerance, and checks that no other
output carries these mime types. This file sits at the root so that it applies to
book/solved/ as well as to tests/.
"""

import pytest

FIGURE_MIME_TYPES = ("application/vnd.plotly.v1+json", "text/html")


def pytest_collectstart(collector):
    if collector.path.suffix == ".ipynb" and hasattr(collector, "skip_compare"):
        collector.skip_compare += FIGURE_MIME_TYPES


def pytest_collection_modifyitems(items):
    # A cell tagged `skip-execution` runs live only (a long training run, a wall-clock timing,
    # a widget): nbclient, and so the book and `make notebooks`, never runs it, and its stored
    # copy is unrun. nbval knows no such tag and would run it, slowly, comparing nothing.
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None and "skip-execution" in cell.get("metadata", {}).get("tags", []):
            item.add_marker(pytest.mark.skip(reason="tagged skip-execution: it runs live only"))
