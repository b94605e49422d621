"""Attention patterns as heatmaps, and an explorer with dropdowns for layer, head and prompt.

`attention_explorer` needs a live kernel for its callbacks: in a static page it shows
nothing useful, and executed headless (nbclient, nbval) it only builds its widgets and
draws the first choice. The book uses plotly dropdowns instead, which need no kernel.
"""

from collections.abc import Callable, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from IPython.display import display
from torch import Tensor

from course.display.plotting import heatmap, show


def pattern_figure(pattern: Tensor, words: list[str], title: str = "") -> go.Figure:
    """A pattern as a heatmap: queries down, keys across, both labelled with their words."""
    ticks = dict(tickvals=list(range(len(words))), ticktext=words)
    fig = heatmap(pattern, title=title)
    fig.update_traces(
        colorscale="Blues",
        zmid=None,
        zmin=0,
        zmax=1,
        hovertemplate="query %{y}, key %{x}: %{z:.2f}<extra></extra>",
    )
    fig.update_layout(
        xaxis=dict(title="key", tickangle=-60, **ticks), yaxis=dict(title="query", **ticks)
    )
    return fig


def streams_into(layers: Sequence[torch.nn.Module], stream: Tensor) -> list[Tensor]:
    """The residual stream each layer reads: the input, then the input plus every earlier
    layer's output (no LayerNorm, no MLP: attention layers alone)."""
    resid, into = stream, []
    with torch.no_grad():
        for layer in layers:
            into.append(resid)
            resid = resid + layer(resid)
    return into


def attention_explorer(
    layers: Sequence[torch.nn.Module],
    head_names: Sequence[Sequence[str]],
    prompts: dict[str, str],
    stream: Callable[[list[str]], Tensor],
) -> widgets.Widget:
    """Dropdowns for layer, head and prompt over the patterns of a stack of layers.

    `head_names[l]` names the heads of layer l worth showing (heads 0, 1, ...); `stream`
    turns a prompt's words into the residual stream of layer 0. The explorer keeps its own
    layers and prompts: cells run later may reuse the names without changing what it draws.
    """
    layers, head_names, prompts = list(layers), [list(n) for n in head_names], dict(prompts)

    def heads_of(layer: int) -> list[tuple[str, int]]:
        return [(f"{h}: {name}", h) for h, name in enumerate(head_names[layer])]

    layer = widgets.Dropdown(options=[(str(i), i) for i in range(len(layers))], description="layer")
    head = widgets.Dropdown(options=heads_of(0), description="head")
    prompt = widgets.Dropdown(options=list(prompts), description="prompt")
    layer.observe(lambda change: setattr(head, "options", heads_of(change.new)), names="value")

    def draw(layer: int, head: int, prompt: str) -> None:
        words = prompts[prompt].split()
        resid = streams_into(layers, stream(words)[None])[layer]
        pattern = layers[layer].pattern(resid)[0, head].detach()
        name = head_names[layer][head]
        display(show(pattern_figure(pattern, words, title=f"layer {layer}, head {head}: {name}")))

    return widgets.interactive(draw, layer=layer, head=head, prompt=prompt)
