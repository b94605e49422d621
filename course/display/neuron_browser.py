"""Chapter 3's neurons shown readably: the tokens a neuron's value promotes and suppresses, and
the contexts that activate it most, as an HTML table, and a browser with a layer dropdown
and a neuron slider for the live notebook.

`decode` turns a list of token ids into text: the tokenizer's `decode` (the course model's
`BPETokenizer.decode`). Newlines and control characters are escaped (\\n), so that a context stays on one line, and a
token's spaces as ␣, so that " the" and "the" differ; the activating token is marked ⟦ ⟧.
`neuron_browser` needs a live kernel for its callbacks; the book shows `neurons_html`.
"""

import html
from collections.abc import Callable

import ipywidgets as widgets
import torch
from torch import Tensor, nn

from solutions.neurons import context, neuron_activations, neuron_logit_effect, top_activating
from solutions.neurons import top_tokens as _top_tokens

Decode = Callable[[list[int]], str]


def visible(text: str) -> str:
    """Text with its backslashes and unprintable characters (newlines, control bytes) escaped
    as Python writes them in a string literal, so that it prints on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.replace("\\", "\\\\"))


def show_token(decode: Decode, token: int) -> str:
    """One token's text, its spaces drawn as ␣."""
    return visible(decode([int(token)])).replace(" ", "␣")


def show_context(decode: Decode, tokens: Tensor) -> str:
    """A context with its last token, the one the neuron fired on, marked ⟦ ⟧."""
    ids = tokens.tolist()
    return f"{visible(decode(ids[:-1]))}⟦{visible(decode(ids[-1:]))}⟧"


def describe_neuron(
    model: nn.Module,
    windows: Tensor,
    acts: Tensor,
    layer: int,
    neuron: int,
    decode: Decode,
    k: int = 8,
    n_tokens: int = 6,
) -> dict:
    """What the page shows of one neuron. `acts` are the layer's activations on `windows`."""
    with torch.no_grad():
        promoted, suppressed = _top_tokens(neuron_logit_effect(model, layer, neuron), n_tokens)
    top = top_activating(acts[..., neuron], k)
    return {
        "name": f"L{layer}N{neuron}",
        "promotes": [show_token(decode, t) for t in promoted.tolist()],
        "suppresses": [show_token(decode, t) for t in suppressed.tolist()],
        "contexts": [
            (round(acts[w, p, neuron].item(), 2), show_context(decode, context(windows, w, p)))
            for w, p in top.tolist()
        ],
    }


def neurons_html(descriptions: list[dict]) -> str:
    """A table of neurons: promoted and suppressed tokens, then the top contexts."""

    def cell(items: list[str]) -> str:
        return " ".join(f"<code>{html.escape(s)}</code>" for s in items)

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


def neuron_browser(model: nn.Module, windows: Tensor, decode: Decode, k: int = 8) -> widgets.VBox:
    """A layer dropdown and a neuron slider over an HTML view of the chosen neuron."""
    with torch.no_grad():
        acts = [neuron_activations(model, windows, i) for i in range(len(model.blocks))]
    layer = widgets.Dropdown(options=list(range(len(acts))), value=0, description="layer")
    neuron = widgets.IntSlider(value=0, min=0, max=acts[0].shape[-1] - 1, description="neuron")
    view = widgets.HTML()

    def draw(_=None) -> None:
        view.value = neurons_html(
            [
                describe_neuron(
                    model, windows, acts[layer.value], layer.value, neuron.value, decode, k
                )
            ]
        )

    layer.observe(draw, names="value")
    neuron.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([layer, neuron]), view])
