"""The checker of chapter 7's KV cache, cached_attention: its output, with and without a cache
and with left padding, against attention written out from scratch, in a three-layer cache
filled as a forward pass fills it (layer by layer; the prompt, then one token at a time),
whose other layers must stay untouched; through a three-layer Transformer, against its own
forward pass; and, without a cache, against Attention's forward. Queries placed at position
0 or by another layer's length, keys taken only from the new tokens, an ignored mask and a
wrong scale are named."""

import functools

import torch

from checks._core import _close, exercise, kind_of, randomize, seeded
from checks._verdicts import CheckFailed
from checks.sampling._common import INF
from solutions import sampling as ref
from solutions.attention import Attention
from solutions.config import TINY
from solutions.transformer import Transformer

# n_heads·d_head ≠ d_model, so that a d_head taken as d_model / n_heads shows.
NARROW = TINY.but(n_heads=3, d_head=8)


def _attention(seed: int) -> Attention:
    return randomize(Attention(NARROW if seed % 2 else TINY), seed=seed, scale=0.3)


def _attend(
    attn, x, past, mask, *, offset=True, use_mask=True, use_cache=True, d_head=None, shift=0
):
    """Attention of positions past.. of x over keys 0.. (the cached ones and their own),
    written out from scratch, with one thing done differently when asked (`shift`: the
    queries placed that many positions off)."""
    q, k, v = (torch.einsum("bpd,hde->bphe", x, W) + b for W, b in
               [(attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)])  # fmt: skip
    start = 0 if use_cache else past
    q, k, v, keys = q[:, past:], k[:, start:], v[:, start:], mask[:, start:]
    n_new, n_keys = q.shape[1], k.shape[1]
    first = (n_keys - n_new if offset else 0) + shift
    query_at = torch.arange(first, first + n_new)[:, None]
    key_at = torch.arange(n_keys)[None, :]
    real = keys[:, None, None, :] if use_mask else torch.ones(1, 1, 1, n_keys, dtype=torch.bool)
    visible = (key_at <= query_at) & (real | (key_at == query_at))
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / (d_head or attn.cfg.d_head) ** 0.5
    pattern = scores.masked_fill(~visible, INF).softmax(-1)
    z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
    return torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O


N_LAYERS = 3
WRONG_LAYER_LENGTH = (
    "placed the new queries {shift:+d} positions off: the cache fills layer by layer in a "
    "forward pass, so another layer's length (or len(cache) after appending, which counts "
    "the last layer's) is not this layer's. New query i sits after this layer's cached keys: "
    "at the number of keys cache.append(layer, k, v) returns, less the new ones, plus i"
)


def _mistakes(attn, x, past, mask, shifts=()) -> dict[str, torch.Tensor]:
    """What cached_attention gives with each usual mistake, for positions past.. of x."""
    mistakes = {
        "ignored the attention mask: no real token may attend to padding": _attend(
            attn, x, past, mask, use_mask=False
        ),
    }
    if attn.cfg.n_heads * attn.cfg.d_head != attn.cfg.d_model:
        mistakes["scaled by sqrt(d_model / n_heads): divide by sqrt(cfg.d_head), which "
                 "is not always d_model / n_heads"] = _attend(
            attn, x, past, mask, d_head=attn.cfg.d_model // attn.cfg.n_heads
        )  # fmt: skip
    if past:
        mistakes["placed the new queries at positions 0, 1, ...: with a cache, "
                 "new query i sits at position len(cache) + i, and the causal "
                 "mask must say so"] = _attend(attn, x, past, mask, offset=False)  # fmt: skip
        mistakes["used only the new keys and values: take the ones "
                 "cache.append(layer, k, v) returns, cached and new"] = _attend(
            attn, x, past, mask, use_cache=False
        )  # fmt: skip
    for shift in shifts:
        mistakes[WRONG_LAYER_LENGTH.format(shift=shift)] = _attend(attn, x, past, mask, shift=shift)
    return mistakes


def _compare(check, got, expected, mistakes, mask, past, what="attention output") -> None:
    """Compare the real positions only: padding positions' outputs are never read.
    `mistakes()` gives the usual mistakes' outputs, asked for only if the output is wrong."""
    real = mask[:, past:, None]
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        if not torch.isfinite(got.masked_fill(~real, 0.0)).all():
            check.fail("real positions came out NaN or infinite.")
        if not torch.isfinite(got).all():
            check.fail(
                "a padding position came out NaN: it may attend to no key, so its "
                "softmax row is all -inf. Let each position see itself (key == query), "
                "else the NaN reaches the next layer's keys and values, and through "
                "them the real tokens (0 · NaN is NaN)."
            )
        got = got.masked_fill(~real, 0.0)
    expected = expected.masked_fill(~real, 0.0)
    if (
        isinstance(got, torch.Tensor)
        and got.shape == expected.shape
        and got.dtype == expected.dtype
    ):
        if _close(got, expected, 1e-4, 1e-5):
            return  # the mistakes cost as much as the check: worked out only for a wrong answer
    with torch.no_grad():
        mistakes = {k: v.masked_fill(~real, 0.0) for k, v in mistakes().items()}
    check.tensor(got, expected, what=what, mistakes=mistakes)


def _lengths(cache) -> list[int]:
    return [0 if k is None else k.shape[1] for k in cache.keys]


def _other_layers(check, cache, want: list[int], layer: int) -> None:
    got = _lengths(cache)
    changed = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w and i != layer]
    if changed:
        check.fail(
            f"layer {changed[0]} of the cache changed, but you were asked for layer {layer}: "
            "use the `layer` argument, cache.append(layer, k, v)."
        )


def _own_layer(check, cache, want: list[int], layer: int) -> None:
    if (got := _lengths(cache)[layer]) != want[layer]:
        check.fail(
            f"after the call layer {layer} of the cache holds {got} positions, expected "
            f"{want[layer]}: append the new keys and values with cache.append(layer, k, v)."
        )


def _call(check, cached_attention, attn, x, cache, layer, mask, want):
    """The learner's output; a call that failed after writing to another layer says so."""
    try:
        return check.call(cached_attention, attn, x, cache, layer, mask)
    except CheckFailed:
        if cache is not None:
            _other_layers(check, cache, want, layer)
        raise


def _forward_pass(check, cached_attention, mask) -> None:
    """Fill a cache the way a forward pass does: the prompt through every layer in turn,
    then one token at a time, each through every layer; each layer's own attention and
    input, each output against attention written out."""
    attns = [_attention(seed=30 + layer) for layer in range(N_LAYERS)]
    xs = [torch.randn(2, 9, a.cfg.d_model, generator=seeded(5 + i)) for i, a in enumerate(attns)]
    cache = ref.KVCache(N_LAYERS)
    for start, stop in [(0, 7), (7, 8), (8, 9)]:
        step = "the prompt" if start == 0 else f"token {start} alone"
        for layer, (attn, x) in enumerate(zip(attns, xs, strict=True)):
            want = [stop if i <= layer else start for i in range(N_LAYERS)]
            with torch.no_grad():
                expected = _attend(attn, x[:, :stop], start, mask[:, :stop])
                # Queries placed by layer 0's length (read after it took this step's
                # positions), or by len(cache) after appending (the last layer's).
                shifts = {stop - start if layer else 0, start - stop if layer < N_LAYERS - 1 else 0}
                shifts.discard(0)
                mistakes = functools.partial(
                    _mistakes, attn, x[:, :stop], start, mask[:, :stop], sorted(shifts)
                )
                got = _call(
                    check, cached_attention, attn, x[:, start:stop], cache, layer, mask[:, :stop],
                    want,
                )  # fmt: skip
            what = f"attention output of layer {layer} for {step}"
            _other_layers(check, cache, want, layer)
            _compare(check, got, expected, mistakes, mask[:, :stop], start, what=what)
            _own_layer(check, cache, want, layer)


def _model_pass(check, cached_attention) -> None:
    """A three-layer Transformer run through the cache the same way, its logits at every
    step against the model's own forward pass over the whole sequence."""
    model = randomize(Transformer(TINY.but(n_layers=N_LAYERS)), seed=50, scale=0.3).eval()
    tokens = torch.randint(TINY.d_vocab, (2, 9), generator=seeded(51))
    cache = ref.KVCache(N_LAYERS)
    with torch.no_grad():
        want = model(tokens)
        for start, stop in [(0, 7), (7, 8), (8, 9)]:
            mask = torch.ones(2, stop, dtype=torch.bool)
            residual = model.embed(tokens[:, start:stop]) + model.pos_embed.W_pos[start:stop]
            for layer, block in enumerate(model.blocks):
                normalized = block.ln1(residual)
                got = check.call(cached_attention, block.attn, normalized, cache, layer, mask)
                if not isinstance(got, torch.Tensor) or got.shape != normalized.shape:
                    check.fail(f"layer {layer}'s attention output is {kind_of(got)} of the "
                               f"wrong shape: expected {tuple(normalized.shape)}.")  # fmt: skip
                residual = residual + got
                residual = residual + block.mlp(block.ln2(residual))
            step = "the prompt" if start == 0 else f"token {start} alone"
            check.tensor(
                model.unembed(model.ln_final(residual)),
                want[:, start:stop],
                what=f"logits of a {N_LAYERS}-layer Transformer for {step}, through your "
                "cached_attention, against its forward pass over the whole sequence",
            )


@exercise(ref.cached_attention)
def check_cached_attention(check, cached_attention):
    x = torch.randn(2, 9, TINY.d_model, generator=seeded(4))
    padded = torch.ones(2, 9, dtype=torch.bool)
    padded[0, :3] = False  # row 0: three pads on the left
    cases = [
        (0, False, "no cache: the whole sequence at once, as Attention computes it"),
        (6, False, "6 positions cached, then 3 new, at the middle layer of three"),
        (None, False, "a forward pass over 3 layers: 7 positions, then 2 tokens one at a time"),
        (5, True, "row 0 left-padded by 3; 5 positions cached, then 4 new"),
        (0, True, "row 0 left-padded by 3, no cache"),
    ]
    for i, (past, pad, label) in enumerate(cases):
        with check.case(label):
            mask = padded if pad else torch.ones(2, 9, dtype=torch.bool)
            if past is None:
                _forward_pass(check, cached_attention, mask)
                _model_pass(check, cached_attention)
                continue
            attn = _attention(seed=10 + i)
            # Three layers, this one the middle: as in a forward pass, layer 0 already holds
            # this step's positions too, and layer 2 not yet; a learner who reads or writes
            # another layer, or its length, goes wrong.
            cache, layer = (ref.KVCache(N_LAYERS), 1) if past else (None, 0)
            with torch.no_grad():
                if past:
                    others = [_attention(seed=20 + i), _attention(seed=40 + i)]
                    ref.cached_attention(others[0], x[:, :past], cache, 0, mask[:, :past])
                    ref.cached_attention(attn, x[:, :past], cache, 1, mask[:, :past])
                    ref.cached_attention(others[1], x[:, :past], cache, 2, mask[:, :past])
                    ref.cached_attention(others[0], x[:, past:], cache, 0, mask)
                expected = _attend(attn, x, past, mask)
                shifts = [9 - past, -(9 - past)] if past else []
                mistakes = functools.partial(_mistakes, attn, x, past, mask, shifts)
                want = [9, 9, past]
                got = _call(check, cached_attention, attn, x[:, past:], cache, layer, mask, want)
            if past:
                _other_layers(check, cache, want, layer)
            _compare(check, got, expected, mistakes, mask, past)
            if past:
                _own_layer(check, cache, want, layer)
            if not past and not pad:
                with torch.no_grad():
                    check.tensor(got, attn(x), what="output against Attention's forward")
