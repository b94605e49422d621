"""Checkers for chapter 7's samplers, KV cache and beam search (solutions/sampling.py).

Deterministic filters are checked on hand-made logits whose answer is known, then on random
ones. Random draws are checked statistically, but with a seeded generator, so that a check
gives the same verdict at every run: 20,000 draws must pass a chi-square test against the
distribution the settings call for (a correct sampler fails it with probability under one
in a million), and a wrong distribution that fits the draws better is named.
"""

import math

import torch

from checks._core import exercise, kind_of, randomize, seeded
from course.config import TINY
from solutions import sampling as ref
from solutions.attention import Attention

__all__ = [
    "check_apply_penalties",
    "check_top_k_filter",
    "check_top_p_filter",
    "check_sample_next_token",
    "check_cached_attention",
    "check_beam_search",
]

INF = float("-inf")


def _row(*values: float) -> torch.Tensor:
    return torch.tensor([values])


@exercise(ref.apply_penalties)
def check_apply_penalties(check, apply_penalties):
    cases = [
        ("token 2 generated three times, token 0 once", _row(1.0, 2.0, 3.0, 4.0), [[2, 0, 2, 2]]),
        ("nothing generated yet", _row(1.0, -2.0, 0.5), [[]]),
        ("two rows, each with its own history", torch.randn(2, 7, generator=seeded(0)),
         [[6, 6, 1], [3, 3, 3]]),
    ]  # fmt: skip
    for label, logits, history in cases:
        for freq, pres in [(0.5, 0.0), (0.0, 1.5), (0.7, 0.3)]:
            with check.case(f"{label}, frequency_penalty {freq}, presence_penalty {pres}"):
                generated = torch.tensor(history, dtype=torch.long).view(len(history), -1)
                expected = ref.apply_penalties(logits, generated, freq, pres)
                counts = torch.zeros_like(logits).scatter_add_(
                    -1, generated, torch.ones_like(generated, dtype=logits.dtype)
                )
                seen = (counts > 0).float()
                mistakes = {
                    "added the penalties: they lower the logits of tokens already generated": (
                        logits + freq * counts + pres * seen
                    ),
                    "applied the presence penalty once per occurrence: it applies once per "
                    "token that appeared at all": logits - (freq + pres) * counts,
                    "applied the frequency penalty once per token: it grows with the count": (
                        logits - (freq + pres) * seen
                    ),
                    "counted the tokens of the first row for every row": logits
                    - freq * counts[:1]
                    - pres * seen[:1],
                }
                got = check.call(apply_penalties, logits, generated, freq, pres)
                check.tensor(got, expected, what="penalised logits", mistakes=mistakes)


def _kept(logits: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(row > -1e8).flatten().tolist() for row in logits]


def _check_filtered(check, got, expected, mistakes: dict[str, torch.Tensor]) -> None:
    """Compare filtered logits: the same tokens dropped (-inf, or any value below -1e8), and
    the same values where kept."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        check.tensor(got, expected.clamp(min=-1e9), what="filtered logits")
    dropped, expected_dropped = got < -1e8, expected == INF
    if torch.isnan(got).any():
        check.fail("the filtered logits hold NaN.")
    if expected_dropped.any() and not dropped.any() and (got[expected_dropped] == 0).all():
        check.fail("you set the other logits to 0: set them to -inf, so that their probability "
                   "is exactly 0.")  # fmt: skip
    if not torch.equal(dropped, expected_dropped):
        for mistake, wrong in mistakes.items():
            if torch.equal(dropped, wrong == INF):
                check.fail(f"the tokens kept are wrong: it looks like you {mistake}.")
        check.fail(
            f"the tokens kept (not -inf), by row, are {_kept(got.masked_fill(dropped, INF))}, "
            f"expected {_kept(expected)}."
        )
    kept = ~expected_dropped
    check.tensor(torch.where(kept, got, 0.0), torch.where(kept, expected, 0.0), what="kept logits")


@exercise(ref.top_k_filter)
def check_top_k_filter(check, top_k_filter):
    known = _row(0.1, 3.0, -1.0, 2.0, 0.5)  # by size: 1, 3, 4, 0, 2
    cases = [(known, 2, [[1, 3]]), (known, 1, [[1]]), (known, 5, [[0, 1, 2, 3, 4]])]
    cases += [(torch.randn(3, 11, generator=seeded(1)) * 3, k, None) for k in (3, 7)]
    for logits, k, kept in cases:
        with check.case(f"{logits.shape[0]}×{logits.shape[1]} logits, k={k}"):
            expected = ref.top_k_filter(logits, k)
            assert kept is None or _kept(expected) == kept  # the answer worked out by hand
            got = check.call(top_k_filter, logits, k)
            below = logits.topk(min(k + 1, logits.shape[-1]), -1).values[:, -1:]
            mistakes = {
                "kept the k smallest logits": logits.masked_fill(
                    logits > (-logits).topk(k, -1).values[:, -1:].neg(), INF
                ),
            }
            if k < logits.shape[-1]:
                mistakes["kept k + 1 tokens: keep those at least as large as the k-th largest"] = (
                    logits.masked_fill(logits < below, INF)
                )
            _check_filtered(check, got, expected, mistakes)


@exercise(ref.top_p_filter)
def check_top_p_filter(check, top_p_filter):
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])  # by size: 1 (0.5), 3 (0.3), 0, 2
    known = probs.log()
    cases = [
        (known, 0.75, [[1, 3]], "0.5 + 0.3 is the first total ≥ 0.75"),
        (known, 0.45, [[1]], "the top token alone holds 0.5 ≥ 0.45"),
        (
            torch.tensor([[0.25, 0.5, 0.25]]).log(),
            0.5,
            [[1]],
            "the top token alone holds 0.5 ≥ 0.5",
        ),
        (known, 0.9, [[0, 1, 3]], "0.5 + 0.3 + 0.15 is the first total ≥ 0.9"),
        (known, 0.01, [[1]], "the top token is always kept"),
        (known, 1.0, [[0, 1, 2, 3]], "p = 1 keeps every token"),
    ]
    cases += [(torch.randn(3, 13, generator=seeded(2)) * 2, p, None, "") for p in (0.3, 0.8)]
    for logits, p, kept, why in cases:
        label = f"{logits.shape[0]}×{logits.shape[1]} logits, p={p}"
        with check.case(label + (f": {why}" if why else "")):
            expected = ref.top_p_filter(logits, p)
            assert kept is None or _kept(expected) == kept  # the answer worked out by hand
            got = check.call(top_p_filter, logits, p)
            if kept is not None and isinstance(got, torch.Tensor) and got.shape == logits.shape:
                if _kept(got) == [[1]] and p == 0.75:
                    check.fail(
                        "you kept only token 1 (probability 0.5): the nucleus is the smallest "
                        "set whose total reaches p, so it includes the token that crosses p."
                    )
                extra = set(_kept(got)[0]) - set(kept[0])
                if len(extra) == 1 and set(kept[0]) < set(_kept(got)[0]):
                    check.fail(
                        "you kept one token too many: stop at the first token that brings "
                        "the total to p or above (drop a token when the tokens before it "
                        "hold p or more: >= p, not > p)."
                    )
            sorted_probs = logits.softmax(-1).sort(-1, descending=True)
            unsorted = logits.softmax(-1).cumsum(-1) - logits.softmax(-1)
            mistakes = {
                "summed the probabilities in vocabulary order: sort them first, largest first": (
                    logits.masked_fill(unsorted >= p, INF)
                ),
                "returned the sorted logits: scatter the mask back to the vocabulary's order": (
                    sorted_probs.values.log().masked_fill(
                        sorted_probs.values.cumsum(-1) - sorted_probs.values >= p, INF
                    )
                ),
            }
            _check_filtered(check, got, expected, mistakes)


N_DRAWS = 20_000
Z_ONE_IN_A_MILLION = 4.75


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's statistic over the tokens the distribution allows; inf if a disallowed one
    was drawn."""
    allowed = probs > 0
    if counts[~allowed].sum() > 0:
        return math.inf
    expected = probs[allowed] * counts.sum()
    return ((counts[allowed] - expected).pow(2) / expected).sum().item()


def _chi_square_bound(df: int) -> float:
    """The chi-square quantile a correct sampler exceeds once in a million (Wilson-Hilferty)."""
    if df <= 0:
        return 0.0
    a = 2 / (9 * df)
    return df * (1 - a + Z_ONE_IN_A_MILLION * math.sqrt(a)) ** 3


def _distribution(logits, temperature, top_k, top_p):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    x = logits / temperature
    if top_k is not None:
        x = ref.top_k_filter(x, top_k)
    if top_p is not None:
        x = ref.top_p_filter(x, top_p)
    return x.softmax(-1)


def _sampling_mistakes(logits, temperature, top_k, top_p) -> dict[str, torch.Tensor]:
    mistakes = {
        "multiplied the logits by the temperature: divide them by it": _distribution(
            logits * temperature * temperature, temperature, top_k, top_p
        ),
        "left out the temperature": _distribution(logits, 1.0, top_k, top_p),
        "drew from the logits as if they were probabilities: take their softmax": (
            logits.clamp(min=0) / logits.clamp(min=0).sum(-1, keepdim=True)
        ),
    }
    if top_k is not None:
        mistakes["did not apply top_k"] = _distribution(logits, temperature, None, top_p)
    if top_p is not None:
        mistakes["did not apply top_p"] = _distribution(logits, temperature, top_k, None)
        mistakes["applied top_p before dividing by the temperature: divide first, as the "
                 "nucleus is taken of the distribution you draw from"] = ref.top_p_filter(
            ref.top_k_filter(logits, top_k) if top_k else logits, top_p
        ).div(temperature).softmax(-1)  # fmt: skip
    return mistakes


@exercise(ref.sample_next_token)
def check_sample_next_token(check, sample_next_token):
    logits = torch.tensor([[1.0, 2.5, 0.3, -1.0, 2.0, 0.0, 1.2]])
    settings = [
        (0.0, None, None, "temperature 0 is greedy"),
        (1.0, None, None, "the softmax"),
        (0.5, None, None, "temperature 0.5 sharpens"),
        (2.0, None, None, "temperature 2 flattens"),
        (1.0, 3, None, "top_k 3"),
        (1.5, None, 0.7, "top_p 0.7 of the distribution at temperature 1.5"),
        (0.8, 4, 0.9, "top_k 4, then top_p 0.9"),
    ]
    for temperature, top_k, top_p, label in settings:
        with check.case(f"{label} ({N_DRAWS:,} seeded draws)"):
            batch = logits.expand(N_DRAWS, -1)
            got = check.call(sample_next_token, batch, temperature, top_k, top_p, seeded(3))
            if not isinstance(got, torch.Tensor) or got.shape != (N_DRAWS,):
                if got is None:
                    check.fail(
                        "your code returned None for the token ids: did you forget `return`?"
                    )
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else kind_of(got)
                check.fail(f"return one token id per row, shape ({N_DRAWS},); got {shape}.")
            if got.is_floating_point():
                check.fail(f"return integer token ids, not dtype {got.dtype}.")
            again = sample_next_token(batch, temperature, top_k, top_p, seeded(3))
            if not torch.equal(got, again):
                check.fail(
                    "two calls with generators seeded alike drew different tokens: draw with "
                    "the `generator` you were given (torch.multinomial(..., generator=generator))."
                )
            counts = torch.bincount(got, minlength=logits.shape[-1]).float()
            probs = _distribution(logits, temperature, top_k, top_p)[0]
            statistic = _chi_square(counts, probs)
            df = int((probs > 0).sum()) - 1
            if statistic <= _chi_square_bound(df):
                continue
            observed = (counts / N_DRAWS).tolist()
            for mistake, wrong in _sampling_mistakes(logits, temperature, top_k, top_p).items():
                wrong = wrong[0]
                if _chi_square(counts, wrong) <= _chi_square_bound(int((wrong > 0).sum()) - 1):
                    check.fail(f"your draws fit another distribution: it looks like you {mistake}.")
            check.fail(
                "your draws do not follow the distribution these settings call for "
                f"(chi-square {statistic:.0f} over {df} degrees of freedom).\n"
                f"  expected frequencies {[round(x, 3) for x in probs.tolist()]}\n"
                f"  your frequencies     {[round(x, 3) for x in observed]}"
            )
    with check.case("a batch of one row, as generate() passes for one prompt"):
        for temperature, top_k, top_p, _ in settings[:2]:
            got = check.call(sample_next_token, logits, temperature, top_k, top_p, seeded(3))
            if isinstance(got, torch.Tensor) and got.shape != (1,):
                check.fail(
                    f"at temperature {temperature:g}, one row of logits gave shape "
                    f"{tuple(got.shape)}, expected (1,): one token id per row, even for one row. "
                    "squeeze() drops every axis of size 1, the batch's too: index [:, 0] or "
                    "squeeze(-1)."
                )


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


def greedy_trap() -> ref.BigramModel:
    """A bigram model on 4 tokens where greedy decoding misses the most probable pair.

    After token 0: token 1 has probability 0.6, token 2 has 0.4. After 1 the next token is
    unsure (at best 3, 0.4); after 2, token 3 is almost certain (0.9). Greedy takes 1, 3
    (0.6 × 0.4 = 0.24); the best pair is 2, 3 (0.4 × 0.9 = 0.36)."""
    probs = torch.tensor(
        [
            [0.0, 0.6, 0.4, 0.0],
            [0.1, 0.2, 0.3, 0.4],
            [0.05, 0.0, 0.05, 0.9],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )
    return ref.BigramModel(probs.log())


@exercise(ref.beam_search)
def check_beam_search(check, beam_search):
    random_bigram = ref.BigramModel(torch.randn(6, 6, generator=seeded(5)) * 2)
    cases = [
        (greedy_trap(), [0], 2, 2, "greedy takes 1, 3 (0.24); the best pair is 2, 3 (0.36)"),
        (random_bigram, [0, 4], 3, 4, "a random bigram model, 3 beams, 4 tokens"),
        (random_bigram, [2], 36, 3, "36 beams over 6 tokens keep every 2-token prefix: exact"),
    ]  # fmt: skip
    for model, prompt, n_beams, n_new, label in cases:
        with check.case(label):
            expected = ref.beam_search(model, prompt, n_beams, n_new)
            got = check.call(beam_search, model, prompt, n_beams, n_new)
            if not isinstance(got, list) or not all(
                isinstance(b, tuple | list) and len(b) == 2 for b in got
            ):
                check.fail("return a list of (tokens, log-probability) pairs, best first.")
            tokens = [list(map(int, b[0])) for b in got]
            scores = [float(b[1]) for b in got]
            if tokens and model is not random_bigram and tokens[0][:1] == [1]:
                check.fail("your best beam is greedy's: keep n_beams candidates at every step.")
            check.equal(tokens, [b[0] for b in expected], what="beams, best first")
            expected_scores = torch.tensor([b[1] for b in expected])
            got_scores = torch.tensor(scores)
            check.tensor(
                got_scores,
                expected_scores,
                what="beams' log-probabilities",
                mistakes={
                    "returned probabilities: return log-probabilities": expected_scores.exp()
                },
            )
            if n_beams == 36:
                brute = _brute_force(model, prompt, n_new)[:n_beams]
                check.equal(tokens, [b[0] for b in brute], what="beams, against every sequence")


def _brute_force(model, prompt: list[int], n_new: int) -> list[tuple[list[int], float]]:
    """Every continuation of n_new tokens with its log-probability, best first."""
    d_vocab = model(torch.tensor([prompt])).shape[-1]
    scored = []
    for index in range(d_vocab**n_new):
        tokens = [index // d_vocab**i % d_vocab for i in reversed(range(n_new))]
        full = torch.tensor([prompt + tokens])
        log_probs = model(full[:, :-1]).log_softmax(-1)[0, len(prompt) - 1 :]
        scored.append((tokens, log_probs.gather(-1, torch.tensor(tokens)[:, None]).sum().item()))
    return sorted(scored, key=lambda pair: -pair[1])
