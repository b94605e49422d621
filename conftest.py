"""nbval compares a figure by its structure, never by the last bits of its floats.

`course.plotting.show` stores a figure three times: plotly's JSON, an HTML fragment holding
the same JSON, and a text/plain summary of its structure. The JSON and the HTML carry the
data's floats, whose last bits depend on the CPU and the thread count, so nbval skips them
(nbval's documented `skip_compare` hook) and compares the summary;
tests/test_portability.py compares the numbers, with a tolerance, and checks that no other
output carries these mime types. This file sits at the root so that it applies to
book/solved/ as well as to tests/.
"""

FIGURE_MIME_TYPES = ("application/vnd.plotly.v1+json", "text/html")


def pytest_collectstart(collector):
    if collector.path.suffix == ".ipynb" and hasattr(collector, "skip_compare"):
        collector.skip_compare += FIGURE_MIME_TYPES
