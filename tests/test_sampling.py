"""Chapter 7's generation: the KV cache equals the uncached model token by token for every
sampler, a left-padded batch equals each prompt alone, greedy decoding equals HuggingFace's
generate on the same weights, and the checkers name the usual mistakes."""

import pytest
import torch

from checks import sampling as checks
from solutions import gpt2
from solutions.attention import kv_cache_bytes
from solutions.config import TINY
from solutions.sampling import (
    BigramModel,
    KVCache,
    apply_penalties,
    beam_search,
    cached_attention,
    forward_with_cache,
    fused_cached_attention,
    generate,
    generate_text,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)
from solutions.transformer import Transformer
from support import assert_accepts, assert_rejects

SAMPLERS = {
    "greedy": dict(temperature=0.0),
    "softmax": dict(),
    "temperature": dict(temperature=0.7),
    "top-k": dict(top_k=5),
    "top-p": dict(top_p=0.8, temperature=1.3),
    "penalties": dict(frequency_penalty=0.8, presence_penalty=0.5),
}
PROMPTS = [[5, 17, 3], [8, 1, 2, 44, 9, 70], [33]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Transformer(TINY).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def test_forward_with_cache_equals_the_model_token_by_token(model):
    tokens = torch.randint(0, TINY.d_vocab, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        torch.testing.assert_close(forward_with_cache(model, tokens), full)
        cache = KVCache(TINY.n_layers)
        steps = [forward_with_cache(model, tokens[:, :5], cache)]
        steps += [forward_with_cache(model, tokens[:, i : i + 1], cache) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert len(cache) == 12


def test_fused_model_runs_with_the_cache_too(model):
    fused = Transformer(TINY, fused=True).eval()
    fused.load_state_dict(model.state_dict())
    assert generate(fused, PROMPTS, 8, temperature=0.0) == generate(
        model, PROMPTS, 8, temperature=0.0
    )


@pytest.mark.parametrize("padded", [False, True], ids=["full", "left-padded"])
def test_fused_cached_attention_equals_cached_attention(model, padded):
    """The fused model's cached path (SDPA, projections per head) is the explicit one, on a
    padded batch too, prompt first then token by token."""
    tokens = torch.randint(0, TINY.d_vocab, (3, 9), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(tokens, dtype=torch.bool)
    if padded:
        mask[0, :4], mask[2, :1] = False, False
    x = torch.randn(3, 9, TINY.d_model, generator=torch.Generator().manual_seed(5))
    attn = model.blocks[1].attn
    fused_attn = Transformer(TINY, fused=True).blocks[1].attn
    fused_attn.load_state_dict(attn.state_dict())
    with torch.no_grad():
        caches = KVCache(1), KVCache(1)
        for start, stop in [(0, 5), (5, 6), (6, 7), (7, 9)]:
            explicit = cached_attention(attn, x[:, start:stop], caches[0], 0, mask[:, :stop])
            fused = fused_cached_attention(
                fused_attn, x[:, start:stop], caches[1], 0, mask[:, :stop]
            )
            torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[1].keys[0], caches[0].keys[0])
    torch.testing.assert_close(caches[1].values[0], caches[0].values[0])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cached_generation_equals_uncached_for_every_sampler(model, sampler):
    kw = SAMPLERS[sampler]
    cached = generate(model, PROMPTS, 15, seed=3, **kw)
    assert cached == generate(model, PROMPTS, 15, seed=3, use_cache=False, **kw)
    assert all(len(row) == 15 for row in cached)


def test_generation_past_the_context_window_reads_its_last_n_ctx_tokens(model):
    """Past n_ctx, the model reads the last n_ctx tokens, their positions from 0 again, as
    nanoGPT crops; with the cache or without, alone or in a padded batch."""
    n_new = TINY.n_ctx + 10 - len(PROMPTS[1])
    tokens = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        for _ in range(n_new):
            next_token = model(tokens[:, -TINY.n_ctx :])[:, -1:].argmax(-1)
            tokens = torch.cat([tokens, next_token], dim=1)
    expected = tokens[0, len(PROMPTS[1]) :].tolist()
    assert generate(model, [PROMPTS[1]], n_new, temperature=0.0)[0] == expected
    assert generate(model, [PROMPTS[1]], n_new, temperature=0.0, use_cache=False)[0] == expected
    assert generate(model, PROMPTS, n_new, temperature=0.0)[1] == expected
    sampled = generate(model, PROMPTS, n_new, seed=2, top_p=0.9)
    assert sampled == generate(model, PROMPTS, n_new, seed=2, top_p=0.9, use_cache=False)


def test_batched_left_padded_generation_equals_each_prompt_alone(model):
    batched = generate(model, PROMPTS, 10, temperature=0.0)
    alone = [generate(model, [prompt], 10, temperature=0.0)[0] for prompt in PROMPTS]
    assert batched == alone
    # ...and each prompt alone is the plain model's argmax, step after step.
    tokens = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        for _ in range(10):
            tokens = torch.cat([tokens, model(tokens)[:, -1:].argmax(-1)], dim=1)
    assert tokens[0, len(PROMPTS[1]) :].tolist() == alone[1]


def test_padded_batch_logits_equal_each_prompt_alone(model):
    from solutions.sampling import left_pad

    tokens, mask = left_pad(PROMPTS)
    with torch.no_grad():
        batched = forward_with_cache(model, tokens, None, mask)
        for row, prompt in enumerate(PROMPTS):
            alone = model(torch.tensor([prompt]))[0]
            torch.testing.assert_close(batched[row, -len(prompt) :], alone, atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_huggingface_generate(model):
    with torch.no_grad():
        model.unembed.b_U.zero_()
    hf_model = gpt2.to_huggingface(model)
    prompt = PROMPTS[1]
    ours = generate(model, [prompt], 12, temperature=0.0)[0]
    theirs = hf_model.generate(
        torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0
    )
    assert ours == theirs[0, len(prompt) :].tolist()


def test_cache_memory_is_the_chapter_2_formula(model):
    cache = KVCache(TINY.n_layers)
    with torch.no_grad():
        forward_with_cache(model, torch.zeros(3, 10, dtype=torch.long), cache)
    assert cache.nbytes() == 3 * kv_cache_bytes(TINY, 10)
    assert kv_cache_bytes(TINY, 1) == 2 * TINY.n_layers * TINY.n_heads * TINY.d_head * 4


def test_generation_stops_at_eos_and_at_a_stop_condition(model):
    free = generate(model, [PROMPTS[0]], 10, temperature=0.0)[0]
    eos = free[3]
    cut = generate(model, [PROMPTS[0]], 10, temperature=0.0, eos_token_id=eos)[0]
    assert cut == free[: free.index(eos)]
    stopped = generate(model, [PROMPTS[0]], 10, temperature=0.0, stop=lambda t: len(t) == 4)[0]
    assert stopped == free[:4]


def test_generate_text_cuts_at_a_stop_string():
    class Letters:
        def encode(self, text):
            return [ord(c) - 97 for c in text]

        def decode(self, ids):
            return "".join(chr(i + 97) for i in ids)

    # After each letter the next one in the alphabet: "ab" continues "cdefg...".
    logits = torch.full((26, 26), -10.0)
    logits[torch.arange(26), (torch.arange(26) + 1) % 26] = 10.0
    model = BigramModel(logits)
    text = generate_text(model, Letters(), "ab", 20, stop="ef", temperature=0.0, use_cache=False)
    assert text == "cd"


def test_penalties_make_repeats_rarer(model):
    plain = generate(model, PROMPTS, 20, seed=4)
    penalised = generate(model, PROMPTS, 20, seed=4, frequency_penalty=2.0, presence_penalty=2.0)
    distinct = lambda rows: sum(len(set(r)) for r in rows)  # noqa: E731
    assert distinct(penalised) > distinct(plain)


# --- Checkers ----------------------------------------------------------------------------

EXERCISES = {
    checks.check_apply_penalties: apply_penalties,
    checks.check_top_k_filter: top_k_filter,
    checks.check_top_p_filter: top_p_filter,
    checks.check_sample_next_token: sample_next_token,
    checks.check_cached_attention: cached_attention,
    checks.check_beam_search: beam_search,
}


@pytest.mark.parametrize("checker", EXERCISES, ids=lambda c: c.__name__)
def test_checkers_accept_the_reference_and_reject_the_stub(checker, capsys):
    assert_accepts(checker, EXERCISES[checker], capsys)

    def stub(*args):
        raise NotImplementedError

    assert_rejects(checker, stub, "not implemented yet")


def test_checkers_accept_other_correct_samplers(capsys):
    def top_k_by_sort(logits, k):
        threshold = logits.sort(dim=-1, descending=True).values[:, k - 1 : k]
        return torch.where(logits >= threshold, logits, torch.finfo(logits.dtype).min)

    def top_p_by_loop(logits, p):
        if p >= 1:
            return logits.clone()
        out = torch.full_like(logits, float("-inf"))
        for row in range(logits.shape[0]):
            probs = logits[row].softmax(-1)
            total = 0.0
            for token in probs.argsort(descending=True).tolist():
                out[row, token] = logits[row, token]
                total += probs[token].item()
                if total >= p:
                    break
        return out

    def top_p_as_huggingface(logits, p):
        # HuggingFace's TopPLogitsWarper: sort ascending, drop while the running total of the
        # least probable is at most 1 - p. Summed smallest first, p = 1 drops nothing.
        sorted_logits, order = logits.sort(dim=-1)
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - p
        drop[:, -1] = False
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    def sample_by_gumbel_free_categorical(logits, temperature=1.0, top_k=None, top_p=None,
                                          generator=None):  # fmt: skip
        if temperature == 0:
            return logits.argmax(-1)
        logits = logits / temperature
        if top_k:
            logits = top_k_by_sort(logits, top_k)
        if top_p:
            logits = (
                top_p_by_loop(logits, p=top_p)
                if logits.shape[0] < 50
                else top_p_filter(logits, top_p)
            )
        probs = logits.softmax(-1)
        u = torch.rand(logits.shape[0], 1, generator=generator)
        return (probs.cumsum(-1) < u).sum(-1).clamp(max=logits.shape[-1] - 1)

    def penalties_by_bincount(logits, generated, frequency_penalty, presence_penalty):
        rows = [torch.bincount(g, minlength=logits.shape[-1]).float() for g in generated]
        counts = torch.stack(rows)
        return logits - counts * frequency_penalty - counts.clamp(max=1) * presence_penalty

    assert_accepts(checks.check_top_k_filter, top_k_by_sort, capsys)
    assert_accepts(checks.check_top_p_filter, top_p_by_loop, capsys)
    assert_accepts(checks.check_top_p_filter, top_p_as_huggingface, capsys)
    assert_accepts(checks.check_sample_next_token, sample_by_gumbel_free_categorical, capsys)
    assert_accepts(checks.check_apply_penalties, penalties_by_bincount, capsys)


def test_check_apply_penalties_names_mistakes():
    def added(logits, generated, f, p):
        return 2 * logits - apply_penalties(logits, generated, f, p)

    def presence_per_occurrence(logits, generated, f, p):
        return apply_penalties(logits, generated, f + p, 0.0)

    def pooled_counts(logits, generated, f, p):
        counts = torch.bincount(generated.flatten(), minlength=logits.shape[-1]).to(logits.dtype)
        return logits - f * counts - p * (counts > 0).to(logits.dtype)

    assert_rejects(checks.check_apply_penalties, added, "lower the logits")
    assert_rejects(checks.check_apply_penalties, presence_per_occurrence, "once per token")
    assert_rejects(checks.check_apply_penalties, pooled_counts, "pooled the counts of every row")


def test_check_top_k_filter_names_mistakes():
    def zeros(logits, k):
        return top_k_filter(logits, k).nan_to_num(neginf=0.0)

    def one_too_many(logits, k):
        return top_k_filter(logits, min(k + 1, logits.shape[-1]))

    def smallest(logits, k):
        return -top_k_filter(-logits, k)

    def exactly_k(logits, k):  # drops a token tied with the k-th
        top = logits.topk(k, -1).indices
        return torch.full_like(logits, float("-inf")).scatter(-1, top, logits.gather(-1, top))

    assert_rejects(checks.check_top_k_filter, zeros, "set them to -inf")
    assert_rejects(checks.check_top_k_filter, one_too_many, "tokens kept")
    assert_rejects(checks.check_top_k_filter, smallest, "tokens kept")
    assert_rejects(checks.check_top_k_filter, exactly_k, "tied with the k-th")


def test_top_p_filter_keeps_every_token_at_p_1():
    # GPT-2's vocabulary at logit scale 3: float32's running total of the sorted probabilities
    # reaches 1.0 thousands of tokens before the last, which the rule alone would drop.
    logits = torch.randn(4, 50_257, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    probs = logits.softmax(-1).sort(-1, descending=True).values
    assert (probs.cumsum(-1) - probs >= 1.0).any()  # what the rule alone would drop
    assert top_p_filter(logits, 0.999).isinf().any()  # below 1, the tail still goes


def test_check_top_p_filter_names_mistakes():
    def drops_the_crossing_token(logits, p):
        probs = logits.softmax(-1)
        sorted_probs, order = probs.sort(-1, descending=True)
        drop = sorted_probs.cumsum(-1) > p
        drop[:, 0] = False
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    def vocabulary_order(logits, p):
        probs = logits.softmax(-1)
        return logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))

    def sorted_output(logits, p):
        return top_p_filter(logits.sort(-1, descending=True).values, p)

    def keeps_a_token_at_exactly_p(logits, p):
        # > p where the nucleus needs >= p: at p = 0.5 the top token's 0.5 is enough alone.
        sorted_probs, order = logits.softmax(-1).sort(-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > p
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    def float32_total_at_p_1(logits, p):
        # The rule alone, without p >= 1's early return: the running total reaches 1.0 early.
        sorted_probs, order = logits.softmax(-1).sort(-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= p
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    assert_rejects(checks.check_top_p_filter, float32_total_at_p_1, "reaches 1.0")
    assert_rejects(checks.check_top_p_filter, drops_the_crossing_token, "crosses p")
    assert_rejects(checks.check_top_p_filter, keeps_a_token_at_exactly_p, ">= p, not > p")
    assert_rejects(checks.check_top_p_filter, vocabulary_order, "tokens kept")
    assert_rejects(checks.check_top_p_filter, sorted_output, "tokens kept")


def filters_in_order(order, temperature_first=True):
    """sample_next_token with its two filters applied in `order`, and the temperature before
    them or after."""

    def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
        if temperature == 0:
            return logits.argmax(dim=-1)
        if temperature_first:
            logits = logits / temperature
        for name in order:
            if name == "k" and top_k is not None:
                logits = top_k_filter(logits, top_k)
            if name == "p" and top_p is not None:
                logits = top_p_filter(logits, top_p)
        if not temperature_first:
            logits = logits / temperature
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]

    return sample


def test_check_sample_next_token_names_the_order_of_its_steps(capsys):
    assert_accepts(checks.check_sample_next_token, filters_in_order("kp"), capsys)
    assert_rejects(checks.check_sample_next_token, filters_in_order("pk"), "top_p before top_k")
    assert_rejects(
        checks.check_sample_next_token,
        filters_in_order("kp", temperature_first=False),
        "applied top_p before dividing by the temperature",
    )


@pytest.mark.parametrize(
    "learner, diagnosis",
    [
        (lambda x, t=1.0, k=None, p=None, g=None: sample_next_token(x, 1 / t if t else 0.0, k, p, g),
         "multiplied the logits by the temperature"),
        (lambda x, t=1.0, k=None, p=None, g=None: sample_next_token(x, 1.0 if t else 0.0, k, p, g),
         "left out the temperature"),
        (lambda x, t=1.0, k=None, p=None, g=None: sample_next_token(x, t, None, p, g),
         "did not apply top_k"),
        (lambda x, t=1.0, k=None, p=None, g=None: sample_next_token(x, t, k, None, g),
         "did not apply top_p"),
        (lambda x, t=1.0, k=None, p=None, g=None: sample_next_token(x, t, k, p, None),
         "the `generator` you were given"),
        (lambda x, t=1.0, k=None, p=None, g=None: sample_next_token(x, t, k, p, g).float(),
         "integer token ids"),
        (lambda x, t=1.0, k=None, p=None, g=None: sample_next_token(x, t, k, p, g)[:, None],
         "one token id per row"),
        # squeeze() keeps a batch of many rows, but turns a batch of one into a 0-d tensor.
        (lambda x, t=1.0, k=None, p=None, g=None: sample_next_token(x, t, k, p, g)[:, None]
         .squeeze(), "squeeze() drops every axis of size 1"),
    ],
    ids=["temperature-times", "no-temperature", "no-top-k", "no-top-p", "no-generator",
         "float", "shape", "squeeze"],
)  # fmt: skip
def test_check_sample_next_token_names_mistakes(learner, diagnosis):
    assert_rejects(checks.check_sample_next_token, learner, diagnosis)


def cached_attention_variant(
    *,
    offset=True,
    use_mask=True,
    use_cache=True,
    append=True,
    own_layer=True,
    see_self=True,
    derived_d_head=False,
):
    """cached_attention written out with einsum, one mistake switched on."""

    def learner(attn, x, cache, layer, mask):
        q = torch.einsum("bpd,hde->bphe", x, attn.W_Q) + attn.b_Q
        k = torch.einsum("bpd,hde->bphe", x, attn.W_K) + attn.b_K
        v = torch.einsum("bpd,hde->bphe", x, attn.W_V) + attn.b_V
        if cache is not None:
            k_all, v_all = cache.append(layer if own_layer else 0, k, v) if append else (k, v)
            if use_cache and append:
                k, v = k_all, v_all
        n_new, n_keys = q.shape[1], k.shape[1]
        query_at = torch.arange(n_keys - n_new if offset else 0, n_keys)[:n_new, None]
        key_at = torch.arange(n_keys)[None, :]
        keys = mask[:, -n_keys:]
        real = keys[:, None, None, :] if use_mask else torch.ones(1, 1, 1, n_keys, dtype=torch.bool)
        visible = (key_at <= query_at) & (real | (key_at == query_at) & see_self)
        d_head = attn.cfg.d_model // attn.cfg.n_heads if derived_d_head else attn.cfg.d_head
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / d_head**0.5
        pattern = scores.masked_fill(~visible, -torch.inf).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        return torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O

    return learner


@pytest.mark.parametrize(
    "switches, diagnosis",
    [
        (dict(offset=False), "len(cache) + i"),
        (dict(use_mask=False), "ignored the attention mask"),
        (dict(use_cache=False), "used only the new keys and values"),
        (dict(append=False), "used only the new keys and values"),
        (dict(own_layer=False), "use the `layer` argument"),
        # A padding position that sees no key is NaN, which the next layer would spread.
        (dict(see_self=False), "a padding position came out NaN"),
        (dict(derived_d_head=True), "sqrt(d_model / n_heads)"),
    ],
    ids=[
        "no-offset",
        "no-mask",
        "no-cache",
        "no-append",
        "layer-0",
        "pad-sees-nothing",
        "d_head-derived",
    ],
)
def test_check_cached_attention_names_mistakes(switches, diagnosis):
    assert_rejects(checks.check_cached_attention, cached_attention_variant(**switches), diagnosis)


def test_check_cached_attention_accepts_a_variant(capsys):
    assert_accepts(checks.check_cached_attention, cached_attention_variant(), capsys)


def _cached_attention_placing_queries_by(past_of):
    """cached_attention with the number of cached positions taken by `past_of(cache, layer,
    n_new)`, read after appending when it says so."""

    def learner(attn, x, cache, layer, mask):
        q, k, v = (torch.einsum("bpd,hde->bphe", x, W) + b for W, b in
                   [(attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)])  # fmt: skip
        n_new = q.shape[1]
        past = past_of(cache, layer, n_new, before=True) if cache is not None else 0
        if cache is not None:
            k, v = cache.append(layer, k, v)
            past = past_of(cache, layer, n_new, before=False, past=past)
        query_at = torch.arange(past, past + n_new)[:, None]
        key_at = torch.arange(k.shape[1])[None, :]
        real = mask[:, None, None, -k.shape[1] :]
        visible = (key_at <= query_at) & (real | (key_at == query_at))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / attn.cfg.d_head**0.5
        z = torch.einsum("bhqk,bkhe->bqhe", scores.masked_fill(~visible, -torch.inf).softmax(-1), v)
        return torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O

    return learner


def _layer_0_length(cache, layer, n_new, *, before, past=0):
    if before:  # layer 0's length: in a forward pass it already holds this step's positions
        return 0 if cache.keys[0] is None else cache.keys[0].shape[1]
    return past


def _len_after_append(cache, layer, n_new, *, before, past=0):
    return 0 if before else len(cache) - n_new  # len(cache) counts the last layer's


def _len_before_append(cache, layer, n_new, *, before, past=0):
    return len(cache) if before else past


def _own_length_before_append(cache, layer, n_new, *, before, past=0):
    own = cache.keys[layer]
    return (0 if own is None else own.shape[1]) if before else past


@pytest.mark.parametrize(
    "past_of", [_layer_0_length, _len_after_append], ids=["layer-0", "len-after"]
)
def test_check_cached_attention_names_another_layers_length(past_of):
    assert_rejects(
        checks.check_cached_attention,
        _cached_attention_placing_queries_by(past_of),
        "positions off",
        "layer by layer",
    )


@pytest.mark.parametrize(
    "past_of", [_len_before_append, _own_length_before_append], ids=["len-before", "own-layer"]
)
def test_check_cached_attention_accepts_the_cached_length_read_before_appending(past_of, capsys):
    assert_accepts(
        checks.check_cached_attention, _cached_attention_placing_queries_by(past_of), capsys
    )
