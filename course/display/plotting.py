"""Plotly figures that render in a live notebook and in the static, offline book.

`show(fig)` emits three representations: plotly's own JSON, which JupyterLab, VS Code and
Colab draw interactively; an HTML fragment that the book renders with the plotly.js it ships
(no CDN, no kernel needed); and, as plain text, the figure's structure (trace types, data
shapes, titles, axes, tick labels), with every number of its data left out.

The last bits of a float depend on the CPU and the thread count, so nbval compares a stored
figure by that text only (the root `conftest.py` skips the JSON and the HTML), and
tests/test_portability.py compares its numbers with a tolerance. The HTML id is made from the
structure, so it too is the same on every machine.
"""

import base64
import hashlib
import json
import re
from typing import Any

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import plotly.io as pio


class ShownFigure:
    """A figure as notebooks and the book display it; see `show`."""

    def __init__(self, fig: go.Figure):
        self.spec = fig.to_plotly_json()
        self.figure = go.Figure(self.spec)
        text = pio.to_json(self.figure, validate=False)
        self.json = json.loads(text)
        self.structure = structure(self.json)
        self.div_id = _fresh_id("fig-" + hashlib.sha256(self.structure.encode()).hexdigest()[:12])

    def __repr__(self) -> str:
        # IPython stores repr() as text/plain, the one part of a figure nbval compares: the
        # structure, never a float that depends on the CPU (nor a memory address).
        return f"<figure {self.div_id}>\n{self.structure}"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        html = pio.to_html(
            self.figure,
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            div_id=self.div_id,
            config={"responsive": True, "displaylogo": False},
        )
        return {"application/vnd.plotly.v1+json": self.json, "text/html": html}


def show(fig: go.Figure) -> ShownFigure:
    """Return `fig` wrapped for display: make it the last expression of a cell."""
    return ShownFigure(fig)


def heatmap(
    z: Any, *, x: list | None = None, y: list | None = None, title: str = "", **layout: Any
) -> go.Figure:
    """A heatmap with row 0 at the top, as matrices are written."""
    fig = go.Figure(go.Heatmap(z=np.asarray(z), x=x, y=y, colorscale="RdBu", zmid=0))
    fig.update_layout(title=title, yaxis_autorange="reversed", width=560, height=480, **layout)
    return fig


# One hue per layer for the parts of the residual stream; past five layers they repeat.
LAYER_HUES = ["Blues", "Oranges", "Greens", "Purples", "Reds"]
# The parts no layer wrote: the two embeddings and, in a logit attribution, the biases.
UNLAYERED_COLORS = {"embed": "#4d4d4d", "pos_embed": "#a6a6a6", "bias": "#000000"}


def part_colors(labels: list[str]) -> list[str]:
    """A colour for each part of the stream, as chapter 5's `decompose_resid` (and
    `direct_logit_attribution`) label them: the embeddings grey, then one hue per layer, its
    heads in middle shades, `b_O` pale and the MLP darkest. Every part gets its own colour,
    and a layer's parts read as one family in a stacked bar."""
    heads: dict[int, list[int]] = {}
    for label in labels:
        if found := re.fullmatch(r"L(\d+)H(\d+)", label):
            heads.setdefault(int(found[1]), []).append(int(found[2]))
    colors = []
    for label in labels:
        if label in UNLAYERED_COLORS:
            colors.append(UNLAYERED_COLORS[label])
            continue
        found = re.fullmatch(r"L(\d+)(?:H(\d+)| (b_O|MLP))", label)
        if not found:
            raise ValueError(f"not a part of the stream: {label!r}")
        layer, head, other = int(found[1]), found[2], found[3]
        scale = getattr(plotly.colors.sequential, LAYER_HUES[layer % len(LAYER_HUES)])
        if head is not None:
            n = len(heads[layer])
            shade = 0.35 + 0.4 * heads[layer].index(int(head)) / max(n - 1, 1)
        else:
            shade = 0.15 if other == "b_O" else 0.95
        colors.append(plotly.colors.sample_colorscale(scale, [shade])[0])
    return colors


def structure(spec: dict) -> str:
    """One line per setting of a figure's JSON, data arrays replaced by their dtype and shape.

    Layout numbers (sizes, domains, tick positions) are kept: they are set, not computed.
    plotly's default template is left out: it is the same for every figure."""
    layout = {k: v for k, v in spec.get("layout", {}).items() if k != "template"}
    lines = [f"{len(spec.get('data', []))} traces"]
    for i, trace in enumerate(spec.get("data", [])):
        lines += _lines(trace, f"data[{i}]", in_trace=True)
    lines += _lines(layout, "layout", in_trace=False)
    return "\n".join(lines)


def typed_array(value: Any) -> np.ndarray | None:
    """The array behind plotly's typed-array encoding ({"dtype", "bdata", "shape"}), if it is one."""
    if not (isinstance(value, dict) and {"dtype", "bdata"} <= value.keys()):
        return None
    a = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    shape = value.get("shape")
    return a.reshape([int(n) for n in str(shape).split(",")]) if shape else a


def is_number_list(value: Any) -> bool:
    """A list, possibly nested, of numbers (or None for gaps): data, not labels."""
    if not isinstance(value, list) or not value:
        return False
    leaves = value
    while leaves and all(isinstance(v, list) for v in leaves):
        leaves = [x for v in leaves for x in v]
    return bool(leaves) and all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in leaves
    )


def _lines(value: Any, path: str, in_trace: bool) -> list[str]:
    array = typed_array(value)
    if array is not None:
        return [f"{path} = {array.dtype.name} array {tuple(array.shape)}"]
    if isinstance(value, dict):
        return [line for k in sorted(value) for line in _lines(value[k], f"{path}.{k}", in_trace)]
    if in_trace and is_number_list(value):
        shape = np.asarray(value, dtype=float).shape
        return [f"{path} = number array {shape}"]
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return [line for i, v in enumerate(value) for line in _lines(v, f"{path}[{i}]", in_trace)]
    return [f"{path} = {json.dumps(value, ensure_ascii=False)}"]


_ids_shown: dict[str, int] = {}


def _fresh_id(base: str) -> str:
    # Two figures of the same structure on one page must not share an HTML id: the second
    # gets a suffix. A fresh kernel numbers them the same way at every run.
    _ids_shown[base] = _ids_shown.get(base, 0) + 1
    return base if _ids_shown[base] == 1 else f"{base}-{_ids_shown[base]}"


class LiveLossCurve:
    """The loss log drawn as a figure that redraws itself in place while training runs (in
    Jupyter; elsewhere it shows nothing). Pass it to solutions.training.train as `on_log`:
    it keeps each row and redraws every `every` steps and at each evaluation."""

    def __init__(self, every: int = 10, title: str = "loss while training"):
        from IPython.display import display

        self.every, self.title, self.log = every, title, []
        self.handle = display(self._figure(), display_id=True)

    def _figure(self) -> ShownFigure:
        evals = [r for r in self.log if r["val_loss"] is not None]
        fig = go.Figure(
            [
                go.Scatter(
                    x=[r["step"] for r in self.log],
                    y=[r["train_loss"] for r in self.log],
                    name="train",
                ),
                go.Scatter(
                    x=[r["step"] for r in evals],
                    y=[r["val_loss"] for r in evals],
                    name="validation",
                ),
            ]
        )
        fig.update_layout(
            title=self.title, xaxis_title="step", yaxis_title="loss (nats per token)", height=360
        )
        return show(fig)

    def __call__(self, row: dict) -> None:
        self.log.append(row)
        due = row["step"] % self.every == 0 or row["val_loss"] is not None
        if self.handle is not None and due:
            self.handle.update(self._figure())
