"""Chapter 3's neurons shown readably: the bytes a neuron's value promotes and suppresses, and
the contexts that activate it most, as an HTML table, and a browser with a layer dropdown
and a neuron slider for the live notebook.

Tokens are bytes (chapter 7's text model); a context is shown as Python writes a bytes
literal (so newlines and partial UTF-8 stay visible) with the activating byte in ⟦ ⟧.
`neuron_browser` needs a live kernel for its callbacks; the book shows `neurons_html`.
"""

import html

import ipywidgets as widgets
import torch
from torch import Tensor, nn

from solutions.neurons import context, neuron_activations, neuron_logit_effect, top_activating
from solutions.neurons import top_tokens as _top_tokens


def show_bytes(tokens: Tensor | list[int]) -> str:
    """Bytes as a bytes literal shows them, without the b'...' around them."""
    return repr(bytes(list(tokens)))[2:-1]


def show_context(tokens: Tensor) -> str:
    """A context with its last byte, the one the neuron fired on, marked ⟦ ⟧."""
    return f"{show_bytes(tokens[:-1])}⟦{show_bytes(tokens[-1:])}⟧"


def describe_neuron(
    model: nn.Module,
    windows: Tensor,
    acts: Tensor,
    layer: int,
    neuron: int,
    k: int = 8,
    n_tokens: int = 6,
) -> dict:
    """What the page shows of one neuron. `acts` are the layer's activations on `windows`."""
    promoted, suppressed = _top_tokens(neuron_logit_effect(model, layer, neuron), n_tokens)
    top = top_activating(acts[..., neuron], k)
    return {
        "name": f"L{layer}N{neuron}",
        "promotes": [show_bytes([t]) for t in promoted.tolist()],
        "suppresses": [show_bytes([t]) for t in suppressed.tolist()],
        "contexts": [
            (round(acts[w, p, neuron].item(), 2), show_context(context(windows, w, p)))
            for w, p in top.tolist()
        ],
    }


def neurons_html(descriptions: list[dict]) -> str:
    """A table of neurons: promoted and suppressed bytes, then the top contexts."""

    def cell(items: list[str]) -> str:  # a space byte drawn as ␣, or it would not show
        return " ".join(f"<code>{html.escape(s) if s != ' ' else '␣'}</code>" for s in items)

    rows = []
    for d in descriptions:
        contexts = "<br>".join(
            f"{a:.2f} <code style='white-space:pre'>{html.escape(c)}</code>"
            for a, c in d["contexts"]
        )
        rows.append(
            f"<tr><td><b>{d['name']}</b></td><td>{cell(d['promotes'])}</td>"
            f"<td>{cell(d['suppresses'])}</td><td style='text-align:left'>{contexts}</td></tr>"
        )
    head = "<tr><th>neuron</th><th>promotes</th><th>suppresses</th><th>top contexts</th></tr>"
    # Scrolls sideways inside its own box, so that a long context never widens the page.
    return f"<div style='overflow-x:auto'><table>{head}{''.join(rows)}</table></div>"


def neuron_browser(model: nn.Module, windows: Tensor, k: int = 8) -> widgets.VBox:
    """A layer dropdown and a neuron slider over an HTML view of the chosen neuron."""
    with torch.no_grad():
        acts = [neuron_activations(model, windows, i) for i in range(len(model.blocks))]
    layer = widgets.Dropdown(options=list(range(len(acts))), value=0, description="layer")
    neuron = widgets.IntSlider(value=0, min=0, max=acts[0].shape[-1] - 1, description="neuron")
    view = widgets.HTML()

    def draw(_=None) -> None:
        view.value = neurons_html(
            [describe_neuron(model, windows, acts[layer.value], layer.value, neuron.value, k)]
        )

    layer.observe(draw, names="value")
    neuron.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([layer, neuron]), view])
