"""Plotly figures that render in a live notebook and in the static, offline book.

`show(fig)` emits two representations: plotly's own JSON, which JupyterLab, VS Code and
Colab draw interactively, and an HTML fragment with a stable id that the book renders
with the plotly.js it ships (no CDN, no random ids, no kernel needed). Numbers are rounded
to 6 significant digits so that stored outputs do not depend on the last bits of a float.
"""

import hashlib
import json
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

SIGNIFICANT_DIGITS = 6


class ShownFigure:
    """A figure as notebooks and the book display it; see `show`."""

    def __init__(self, fig: go.Figure):
        self.spec = _rounded(fig.to_plotly_json())
        self.figure = go.Figure(self.spec)
        text = pio.to_json(self.figure, validate=False)
        self.div_id = "fig-" + hashlib.sha256(text.encode()).hexdigest()[:12]
        self.json = json.loads(text)

    def __repr__(self) -> str:
        # IPython also stores repr() as text/plain: without this it holds a memory address,
        # which differs at every run and breaks nbval's comparison of stored outputs.
        return f"<figure {self.div_id}>"

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


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return _round_array(value)
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


def _round_array(a: np.ndarray) -> np.ndarray:
    finite = np.abs(a[np.isfinite(a)])
    if finite.size == 0 or finite.max() == 0:
        return a
    decimals = SIGNIFICANT_DIGITS - 1 - int(math.floor(math.log10(finite.max())))
    return np.round(a.astype(np.float64), decimals)
