"""The checker of chapter 7's KV cache, cached_attention: its output, with and without a cache
and with left padding, against attention written out from scratch, in a two-layer cache whose
other layer must stay untouched; and, without a cache, against Attention's forward. Queries
placed at position 0, keys taken only from the new tokens, an ignored mask and a wrong scale
are named."""

import torch

from checks._core import exercise, randomize, seeded
from checks.sampling._common import INF
from solutions import sampling as ref
from solutions.attention import Attention
from solutions.config import TINY

# n_heads·d_head ≠ d_model, so that a d_head taken as d_model / n_heads shows.
NARROW = TINY.but(n_heads=3, d_head=8)


def _attention(seed: int) -> Attention:
    return randomize(Attention(NARROW if seed % 2 else TINY), seed=seed, scale=0.3)


def _attend(attn, x, past, mask, *, offset=True, use_mask=True, use_cache=True, d_head=None):
    """Attention of positions past.. of x over keys 0.. (the cached ones and their own),
    written out from scratch, with one thing done differently when asked."""
    q, k, v = (torch.einsum("bpd,hde->bphe", x, W) + b for W, b in
               [(attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)])  # fmt: skip
    start = 0 if use_cache else past
    q, k, v, keys = q[:, past:], k[:, start:], v[:, start:], mask[:, start:]
    n_new, n_keys = q.shape[1], k.shape[1]
    query_at = torch.arange(n_keys - n_new if offset else 0, n_keys - n_new + n_new)[:n_new, None]
    key_at = torch.arange(n_keys)[None, :]
    real = keys[:, None, None, :] if use_mask else torch.ones(1, 1, 1, n_keys, dtype=torch.bool)
    visible = (key_at <= query_at) & (real | (key_at == query_at))
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / (d_head or attn.cfg.d_head) ** 0.5
    pattern = scores.masked_fill(~visible, INF).softmax(-1)
    z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
    return torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O


@exercise(ref.cached_attention)
def check_cached_attention(check, cached_attention):
    x = torch.randn(2, 9, TINY.d_model, generator=seeded(4))
    padded = torch.ones(2, 9, dtype=torch.bool)
    padded[0, :3] = False  # row 0: three pads on the left
    cases = [
        (0, False, "no cache: the whole sequence at once, as Attention computes it"),
        (6, False, "6 positions cached, then 3 new"),
        (8, False, "8 positions cached, then 1 new"),
        (5, True, "row 0 left-padded by 3; 5 positions cached, then 4 new"),
        (0, True, "row 0 left-padded by 3, no cache"),
    ]
    for i, (past, pad, label) in enumerate(cases):
        with check.case(label):
            attn = _attention(seed=10 + i)
            mask = padded if pad else torch.ones(2, 9, dtype=torch.bool)
            # Two layers, this one the second: layer 0 holds another attention's keys, which
            # a learner who reads or writes the wrong layer would use.
            cache, layer = (ref.KVCache(2), 1) if past else (None, 0)
            with torch.no_grad():
                if past:
                    other = _attention(seed=20 + i)
                    ref.cached_attention(other, x[:, :past], cache, 0, mask[:, :past])
                    ref.cached_attention(attn, x[:, :past], cache, 1, mask[:, :past])
                expected = _attend(attn, x, past, mask)
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
                got = check.call(cached_attention, attn, x[:, past:], cache, layer, mask)
            if past and cache.keys[0].shape[1] != past:
                check.fail(
                    f"layer 0 of the cache changed, but you were asked for layer {layer}: "
                    "use the `layer` argument, cache.append(layer, k, v)."
                )
            # Padding positions' outputs are never read: only real positions are compared.
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
            mistakes = {k: v.masked_fill(~real, 0.0) for k, v in mistakes.items()}
            check.tensor(got, expected, what="attention output", mistakes=mistakes)
            if past and len(cache) != 9:
                check.fail(
                    f"after the call the cache holds {len(cache)} positions, expected 9: append "
                    "the new keys and values with cache.append(layer, k, v)."
                )
            if not past and not pad:
                with torch.no_grad():
                    check.tensor(got, attn(x), what="output against Attention's forward")
