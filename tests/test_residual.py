"""Chapter 5's residual stream: the checkers accept correct code however it is written and
reject activations recorded at the wrong point, wrong sums and wrong counts, with a diagnosis;
the reference's own claims (the cache changes nothing, the parts sum to the stream, the
shares sum to the logit difference) hold on random models, attention-only ones included."""

import einops
import pytest
import torch
import torch.nn.functional as F

from checks import residual as checks
from checks.residual import random_model
from course.config import GPT2_SMALL, TINY
from solutions import residual as ref
from support import assert_accepts, assert_rejects

TOKENS = torch.randint(TINY.d_vocab, (2, 7), generator=torch.Generator().manual_seed(0))


# --- The reference's claims ----------------------------------------------------------------


@pytest.mark.parametrize("attn_only", [False, True], ids=["with-mlps", "attention-only"])
def test_cache_changes_nothing_and_the_stream_is_the_sum_of_its_parts(attn_only):
    model = random_model(TINY, attn_only, seed=1)
    logits, cache = ref.run_with_cache(model, TOKENS)
    if not attn_only:
        assert torch.equal(logits, model(TOKENS))
    parts, labels = ref.decompose_resid(cache, model)
    assert len(labels) == parts.shape[0] == 2 + TINY.n_layers * (TINY.n_heads + 1 + (not attn_only))
    final = cache[f"blocks.{TINY.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(parts.sum(0), final, rtol=0, atol=1e-5)
    shares, _ = ref.direct_logit_attribution(cache, model, 5, 9)
    torch.testing.assert_close(shares.sum(0), logits[..., 5] - logits[..., 9], rtol=0, atol=1e-4)
    torch.testing.assert_close(ref.logit_lens(cache, model)[-1], logits)


def test_attention_only_blocks_record_no_mlp_names():
    _, cache = ref.run_with_cache(random_model(TINY, True, seed=2), TOKENS)
    assert not [n for n in cache if "mlp" in n or "ln2" in n or "resid_mid" in n]
    assert "blocks.1.hook_resid_post" in cache and "ln_final.hook_scale" in cache


def test_cache_against_the_model_s_own_modules():
    model = random_model(TINY, False, seed=3)
    _, cache = ref.run_with_cache(model, TOKENS)
    block = model.blocks[0]
    normalized = block.ln1(cache["blocks.0.hook_resid_pre"])
    torch.testing.assert_close(cache["blocks.0.ln1.hook_normalized"], normalized)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], block.attn.pattern(normalized))
    torch.testing.assert_close(
        cache["blocks.0.attn.hook_attn_scores"], block.attn.attn_scores(normalized)
    )
    torch.testing.assert_close(cache["blocks.0.hook_attn_out"], block.attn(normalized))
    torch.testing.assert_close(
        cache["blocks.0.hook_mlp_out"], block.mlp(block.ln2(cache["blocks.0.hook_resid_mid"]))
    )
    var = cache["blocks.0.hook_resid_pre"].var(-1, keepdim=True, unbiased=False)
    torch.testing.assert_close(cache["blocks.0.ln1.hook_scale"], (var + TINY.layer_norm_eps).sqrt())


def test_llama_counts():
    counts = ref.count_stream_vectors(ref.LLAMA3_8B, 1, pos_embed=False, biases=False)
    assert counts == {"embeddings": 1, "messages": 32 * 32, "memories": 32 * 14336, "biases": 0}
    assert ref.count_stream_vectors(GPT2_SMALL)["messages"] == 144


# --- run_with_hooks and run_with_cache -----------------------------------------------------


def hooks_variant(*, record_as: tuple[str, str] | None = None, ignore_returns=False):
    """A run_with_hooks that hands the hook one activation under another's name, or that
    goes on with its own value whatever the hook returns."""

    def run_with_hooks(model, tokens, hook):
        seen = {}

        def wrapped(name, x):
            seen[name] = x
            if record_as and name == record_as[0]:
                hook(name, seen[record_as[1]])
                return x
            out = hook(name, x)
            return x if ignore_returns else out

        return ref.run_with_hooks(model, tokens, wrapped)

    return run_with_hooks


def cache_variant(mutate):
    """A run_with_cache whose cache is the reference's, changed by `mutate(cache, model)`."""

    def run_with_cache(model, tokens):
        logits, cache = ref.run_with_cache(model, tokens)
        mutate(cache, model)
        return logits, cache

    return run_with_cache


def test_run_with_hooks_checker_accepts_the_reference(capsys):
    assert_accepts(checks.check_run_with_hooks, ref.run_with_hooks, capsys)
    assert_accepts(checks.check_run_with_cache, ref.run_with_cache, capsys)
    assert_accepts(checks.check_attention_with_hooks, ref.attention_with_hooks, capsys)


def test_run_with_cache_checker_accepts_another_correct_implementation(capsys):
    def run_with_cache(model, tokens):
        cache = {}

        def norm(ln, x, name):
            scale = (x.var(-1, keepdim=True, unbiased=False) + ln.cfg.layer_norm_eps).sqrt()
            cache[f"{name}.hook_scale"] = scale
            out = F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, ln.cfg.layer_norm_eps)
            cache[f"{name}.hook_normalized"] = out
            return out

        x = cache["hook_embed"] = model.embed.W_E[tokens]
        cache["hook_pos_embed"] = model.pos_embed(tokens)
        x = x + cache["hook_pos_embed"]
        for i, block in enumerate(model.blocks):
            b, attn = f"blocks.{i}", block.attn
            cache[f"{b}.hook_resid_pre"] = x
            h = norm(block.ln1, x, f"{b}.ln1")
            q, k, v = (
                torch.einsum("bpd,hde->bphe", h, W) + bias
                for W, bias in [(attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)]
            )
            cache[f"{b}.attn.hook_q"], cache[f"{b}.attn.hook_k"] = q, k
            cache[f"{b}.attn.hook_v"] = v
            scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / attn.cfg.d_head**0.5
            mask = torch.tril(torch.ones(scores.shape[-2:], dtype=torch.bool))
            scores = torch.where(mask, scores, float("-inf"))
            cache[f"{b}.attn.hook_attn_scores"] = scores
            pattern = cache[f"{b}.attn.hook_pattern"] = torch.softmax(scores, -1)
            z = cache[f"{b}.attn.hook_z"] = (pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
            out = cache[f"{b}.hook_attn_out"] = (
                torch.einsum("bphe,hed->bpd", z, attn.W_O) + attn.b_O
            )
            x = x + out
            if block.mlp is None:
                x = cache[f"{b}.hook_resid_post"] = x
                continue
            cache[f"{b}.hook_resid_mid"] = x
            pre = cache[f"{b}.mlp.hook_pre"] = norm(block.ln2, x, f"{b}.ln2") @ block.mlp.W_in
            pre += block.mlp.b_in
            post = cache[f"{b}.mlp.hook_post"] = F.gelu(pre, approximate="tanh")
            out = cache[f"{b}.hook_mlp_out"] = post @ block.mlp.W_out + block.mlp.b_out
            x = cache[f"{b}.hook_resid_post"] = x + out
        return model.unembed(norm(model.ln_final, x, "ln_final")), cache

    assert_accepts(checks.check_run_with_cache, run_with_cache, capsys)


WRONG_POINTS = {
    "normalized before the LayerNorm": (
        ("blocks.0.ln1.hook_normalized", "blocks.0.hook_resid_pre"),
        "what you recorded as blocks.0.ln1.hook_normalized is what TransformerLens records as "
        "blocks.0.hook_resid_pre",
    ),
    "pattern as scores": (
        ("blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"),
        "blocks.0.attn.hook_attn_scores is not masked",
    ),
    "scores as pattern": (
        ("blocks.1.attn.hook_pattern", "blocks.1.attn.hook_attn_scores"),
        "blocks.1.attn.hook_pattern",
    ),
    "resid_mid as resid_pre": (
        ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid"),
        "what you recorded as blocks.0.hook_resid_pre is what TransformerLens records as "
        "blocks.0.hook_resid_mid",
    ),
    "resid_pre as resid_post": (
        ("blocks.0.hook_resid_post", "blocks.0.hook_resid_mid"),
        "recorded as blocks.0.hook_resid_post is what TransformerLens records as "
        "blocks.0.hook_resid_mid",
    ),
    "ln2's output as ln1's": (
        ("blocks.1.ln1.hook_normalized", "blocks.1.ln2.hook_normalized"),
        "what you recorded as blocks.1.ln1.hook_normalized",
    ),
    "mlp pre as post": (
        ("blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre"),
        "records as blocks.0.mlp.hook_pre",
    ),
    "attn_out as mlp_out": (
        ("blocks.0.hook_mlp_out", "blocks.0.hook_attn_out"),
        "records as blocks.0.hook_attn_out",
    ),
    "final stream before ln_final": (
        ("ln_final.hook_normalized", "blocks.1.hook_resid_post"),
        "records as blocks.1.hook_resid_post",
    ),
}


@pytest.mark.parametrize("mistake", WRONG_POINTS)
def test_run_with_cache_checker_rejects_activations_recorded_at_the_wrong_point(mistake):
    (name, recorded), message = WRONG_POINTS[mistake]

    def mutate(cache, model):
        cache[name] = cache[recorded]

    assert_rejects(checks.check_run_with_cache, cache_variant(mutate), message)


@pytest.mark.parametrize(
    "mistake",
    ["normalized before the LayerNorm", "final stream before ln_final", "mlp pre as post"],
)
def test_run_with_hooks_checker_rejects_activations_recorded_at_the_wrong_point(mistake):
    record_as, message = WRONG_POINTS[mistake]
    assert_rejects(checks.check_run_with_hooks, hooks_variant(record_as=record_as), message)


def _before_w_and_b(cache, model):
    ln = model.blocks[0].ln1
    name = "blocks.0.ln1.hook_normalized"
    cache[name] = (cache[name] - ln.b) / ln.w


def _unscaled(cache, model):
    name = "blocks.0.attn.hook_attn_scores"
    cache[name] = cache[name] * model.cfg.d_head**0.5


def _unmasked(cache, model):
    name = "blocks.0.attn.hook_attn_scores"
    q, k = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_k"]
    cache[name] = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / q.shape[-1] ** 0.5


def _finite_mask(cache, model):
    name = "blocks.0.attn.hook_attn_scores"
    cache[name] = cache[name].masked_fill(cache[name].isinf(), -1e5)


def _transposed(name, dims):
    def mutate(cache, model):
        cache[name] = cache[name].transpose(*dims)

    return mutate


def _inverse_scale(cache, model):
    cache["ln_final.hook_scale"] = 1 / cache["ln_final.hook_scale"]


def _drop(name):
    def mutate(cache, model):
        del cache[name]

    return mutate


def _resid_mid_everywhere(cache, model):
    for i in range(len(model.blocks)):
        cache.setdefault(f"blocks.{i}.hook_resid_mid", cache[f"blocks.{i}.hook_resid_post"])


CACHE_MISTAKES = {
    "normalized before w and b": (_before_w_and_b, "before w and b"),
    "scores not divided by sqrt(d_head)": (_unscaled, "before dividing by sqrt(d_head)"),
    "scores before the mask": (_unmasked, "not masked as TransformerLens records it"),
    "scores masked with -1e5": (_finite_mask, "masked with a large finite number"),
    "pattern with heads after queries": (
        _transposed("blocks.0.attn.hook_pattern", (1, 2)),
        "[batch, n_heads, query_posn, key_posn]",
    ),
    "pattern transposed": (
        _transposed("blocks.1.attn.hook_pattern", (-1, -2)),
        "rows are queries, columns keys",
    ),
    "q with heads before positions": (
        _transposed("blocks.0.attn.hook_q", (1, 2)),
        "[batch, posn, n_heads, d_head]",
    ),
    "1 / scale": (_inverse_scale, "records sqrt(var + eps), the divisor"),
    "a name left out": (_drop("blocks.1.attn.hook_z"), "Missing: ['blocks.1.attn.hook_z']"),
    "resid_mid in attention-only blocks": (_resid_mid_everywhere, "attention-only model"),
}


@pytest.mark.parametrize("mistake", CACHE_MISTAKES)
def test_run_with_cache_checker_rejects_and_names(mistake):
    mutate, message = CACHE_MISTAKES[mistake]
    assert_rejects(checks.check_run_with_cache, cache_variant(mutate), message)


def test_run_with_hooks_checker_rejects_a_run_that_ignores_what_the_hook_returns():
    assert_rejects(
        checks.check_run_with_hooks, hooks_variant(ignore_returns=True), "`x = hook(name, x)`"
    )


def test_run_with_cache_checker_rejects_changed_logits_and_a_bare_cache():
    def changed(model, tokens):
        logits, cache = ref.run_with_cache(model, tokens)
        return logits * 1.01, cache

    assert_rejects(checks.check_run_with_cache, changed, "logits")
    assert_rejects(checks.check_run_with_cache, lambda m, t: ref.run_with_cache(m, t)[1], "pair")


def test_attention_with_hooks_checker_rejects_scores_recorded_as_the_pattern():
    def attention_with_hooks(attn, normalized, name, hook):
        seen = {}

        def wrapped(n, x):
            seen[n] = x
            if n.endswith("hook_pattern"):
                hook(n, seen[f"{name}.hook_attn_scores"])
                return x
            return hook(n, x)

        return ref.attention_with_hooks(attn, normalized, name, wrapped)

    assert_rejects(checks.check_attention_with_hooks, attention_with_hooks, "hook_pattern")


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda model, tokens, hook: None, "nothing was recorded"),
        (lambda model, tokens, hook: ref.run_with_hooks(model, tokens, hook) and None, "`return`"),
        (lambda model, tokens, hook: 1 / 0, "raised ZeroDivisionError"),
    ],
    ids=["no-hooks", "none", "raises"],
)
def test_run_with_hooks_checker_turns_broken_code_into_a_verdict(fn, message):
    assert_rejects(checks.check_run_with_hooks, fn, message)


def test_run_with_hooks_checker_rejects_the_stub():
    def stub(model, tokens, hook):
        raise NotImplementedError()

    assert_rejects(checks.check_run_with_hooks, stub, "not implemented yet")


# --- run_with_patch ------------------------------------------------------------------------


def test_run_with_patch_checker_accepts_the_reference_and_a_dict_of_patches(capsys):
    assert_accepts(checks.check_run_with_patch, ref.run_with_patch, capsys)

    def run_with_patch(model, tokens, name, value):
        patches = {name: value}
        return ref.run_with_hooks(model, tokens, lambda n, x: patches.get(n, x))

    assert_accepts(checks.check_run_with_patch, run_with_patch, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda m, t, name, value: ref.run_with_cache(m, t)[0], "did not patch"),
        (
            lambda m, t, name, value: ref.run_with_hooks(
                m, t, lambda n, x: value if n.endswith(name.split(".")[-1]) else x
            ),
            "patched",
        ),
        (
            lambda m, t, name, value: ref.run_with_hooks(
                m, t, lambda n, x: x + value if n == name else x
            ),
            "patched",
        ),
    ],
    ids=["ignores-the-patch", "patches-every-layer", "adds-instead-of-replacing"],
)
def test_run_with_patch_checker_rejects(fn, message):
    assert_rejects(checks.check_run_with_patch, fn, message)


# --- decompose_resid -----------------------------------------------------------------------


def test_decompose_resid_checker_accepts_the_reference_and_a_loop_over_heads(capsys):
    assert_accepts(checks.check_decompose_resid, ref.decompose_resid, capsys)

    def decompose_resid(cache, model):
        parts, labels = [cache["hook_embed"], cache["hook_pos_embed"]], ["embed", "pos_embed"]
        for i, block in enumerate(model.blocks):
            z = cache[f"blocks.{i}.attn.hook_z"]
            for h in range(z.shape[2]):
                parts.append(z[:, :, h] @ block.attn.W_O[h])
                labels.append(f"L{i}H{h}")
            parts.append(torch.zeros_like(parts[0]) + block.attn.b_O)
            labels.append(f"L{i} b_O")
            if block.mlp is not None:
                parts.append(cache[f"blocks.{i}.hook_mlp_out"])
                labels.append(f"L{i} MLP")
        return torch.stack(parts), labels

    assert_accepts(checks.check_decompose_resid, decompose_resid, capsys)


def _decompose(*, b_o="own", per_layer=False, mlp_label="L{i} MLP"):
    def decompose_resid(cache, model):
        parts, labels = [cache["hook_embed"], cache["hook_pos_embed"]], ["embed", "pos_embed"]
        for i, block in enumerate(model.blocks):
            W_O, b_O = block.attn.W_O, block.attn.b_O
            if per_layer:
                parts.append(cache[f"blocks.{i}.hook_attn_out"])
                labels.append(f"L{i} attn")
            else:
                z = cache[f"blocks.{i}.attn.hook_z"]
                for h in range(z.shape[2]):
                    head = z[:, :, h] @ W_O[h]
                    parts.append(head + b_O / z.shape[2] if b_o == "split" else head)
                    labels.append(f"L{i}H{h}")
                if b_o in ("own", "split"):
                    parts.append((b_O * (b_o == "own")).expand_as(parts[0]))
                    labels.append(f"L{i} b_O")
            if block.mlp is not None:
                parts.append(cache[f"blocks.{i}.hook_mlp_out"])
                labels.append(mlp_label.format(i=i))
        return torch.stack(parts), labels

    return decompose_resid


@pytest.mark.parametrize(
    "fn, message",
    [
        (_decompose(b_o="none"), "the labels are"),
        (_decompose(b_o="split"), "split b_O among the heads"),
        (_decompose(per_layer=True), "the labels are"),
        (_decompose(mlp_label="{i}_mlp_out"), "L0 MLP"),
        (lambda cache, model: ref.decompose_resid(cache, model)[0], "return a pair"),
    ],
    ids=["b_O-missing", "b_O-split", "layers-not-heads", "labels", "no-labels"],
)
def test_decompose_resid_checker_rejects(fn, message):
    assert_rejects(checks.check_decompose_resid, fn, message)


# --- count_stream_vectors ------------------------------------------------------------------


def test_count_stream_vectors_checker_accepts_the_reference(capsys):
    assert_accepts(checks.check_count_stream_vectors, ref.count_stream_vectors, capsys)


def _count(*, messages=None, memories=None, embeddings=None, biases=None):
    def count_stream_vectors(cfg, n_ctx=1, *, pos_embed=True, biases_=True, **kw):
        counts = ref.count_stream_vectors(cfg, n_ctx, pos_embed=pos_embed, biases=kw["biases"])
        for part, f in dict(
            messages=messages, memories=memories, embeddings=embeddings, biases=biases
        ).items():
            if f:
                counts[part] = f(cfg, n_ctx, pos_embed, kw["biases"])
        return counts

    return count_stream_vectors


@pytest.mark.parametrize(
    "fn, message",
    [
        (_count(messages=lambda c, n, p, b: c.n_heads * n), "n_layers · n_heads"),
        (_count(messages=lambda c, n, p, b: c.n_layers * c.n_heads), "times the positions"),
        (_count(memories=lambda c, n, p, b: c.n_layers * c.d_model * n), "n_layers · d_mlp"),
        (_count(embeddings=lambda c, n, p, b: 2 * n), "where it is learned"),
        (_count(biases=lambda c, n, p, b: 2 * c.n_layers * n), "b_O and b_out"),
    ],
    ids=["one-layer", "one-position", "d_model", "embeddings", "biases"],
)
def test_count_stream_vectors_checker_rejects(fn, message):
    assert_rejects(checks.check_count_stream_vectors, fn, message)


# --- logit lens and direct logit attribution -----------------------------------------------


def test_logit_lens_checker_accepts_the_reference_and_a_loop(capsys):
    assert_accepts(checks.check_logit_lens, ref.logit_lens, capsys)

    def logit_lens(cache, model):
        out = []
        for i in range(len(model.blocks)):
            out.append(model.unembed(model.ln_final(cache[f"blocks.{i}.hook_resid_pre"])))
        last = cache[f"blocks.{len(model.blocks) - 1}.hook_resid_post"]
        return torch.stack([*out, model.unembed(model.ln_final(last))])

    assert_accepts(checks.check_logit_lens, logit_lens, capsys)


def _lens(*, final=True, frozen=False, points="pre"):
    def logit_lens(cache, model):
        n = len(model.blocks)
        if points == "pre":
            streams = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(n)]
            streams.append(cache[f"blocks.{n - 1}.hook_resid_post"])
        else:
            streams = [cache[f"blocks.{i}.hook_resid_post"] for i in range(n)]
        ln = model.ln_final
        out = []
        for s in streams:
            if frozen:
                s = (s - s.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"] * ln.w + ln.b
            elif final:
                s = ln(s)
            out.append(model.unembed(s))
        return torch.stack(out)

    return logit_lens


@pytest.mark.parametrize(
    "fn, message",
    [
        (_lens(final=False), "left out ln_final"),
        (_lens(frozen=True), "reused the final run's ln_final scale"),
        (_lens(points="post"), "left out the embeddings alone"),
    ],
    ids=["no-ln_final", "frozen-scale", "resid_post"],
)
def test_logit_lens_checker_rejects(fn, message):
    assert_rejects(checks.check_logit_lens, fn, message)


def test_direct_logit_attribution_checker_accepts_the_reference_and_folded_w(capsys):
    assert_accepts(checks.check_direct_logit_attribution, ref.direct_logit_attribution, capsys)

    def direct_logit_attribution(cache, model, correct, wrong):
        parts, labels = ref.decompose_resid(cache, model)
        ln, W_U, b_U = model.ln_final, model.unembed.W_U, model.unembed.b_U
        direction = ln.w * (W_U[:, correct] - W_U[:, wrong])  # w folded into the direction
        centred = parts - einops.reduce(parts, "c b p d -> c b p 1", "mean")
        shares = einops.einsum(
            centred / cache["ln_final.hook_scale"], direction, "c b p d, d -> c b p"
        )
        bias = (ln.b @ (W_U[:, correct] - W_U[:, wrong]) + b_U[correct] - b_U[wrong]).expand(
            1, *shares.shape[1:]
        )
        return torch.cat([shares, bias]), [*labels, "bias"]

    assert_accepts(checks.check_direct_logit_attribution, direct_logit_attribution, capsys)


def _dla(*, centre=True, scale="frozen", w=True, sign=1, bias=True):
    def direct_logit_attribution(cache, model, correct, wrong):
        parts, labels = ref.decompose_resid(cache, model)
        ln, W_U, b_U = model.ln_final, model.unembed.W_U, model.unembed.b_U
        direction = sign * (W_U[:, correct] - W_U[:, wrong])
        x = parts - parts.mean(-1, keepdim=True) if centre else parts
        if scale == "frozen":
            x = x / cache["ln_final.hook_scale"]
        elif scale == "own":
            x = x / (x.var(-1, keepdim=True, unbiased=False) + ln.cfg.layer_norm_eps).sqrt()
        x = x * ln.w if w else x
        shares = x @ direction
        if not bias:
            return shares, labels
        b = sign * (ln.b @ (W_U[:, correct] - W_U[:, wrong]) + b_U[correct] - b_U[wrong])
        return torch.cat([shares, b.expand_as(shares[:1])]), [*labels, "bias"]

    return direct_logit_attribution


@pytest.mark.parametrize(
    "fn, message",
    [
        (_dla(centre=False), "did not centre the parts"),
        (_dla(scale="none"), "did not divide by ln_final's scale"),
        (_dla(scale="own"), "gave each part its own LayerNorm scale"),
        (_dla(w=False), "left out ln_final's w"),
        (_dla(sign=-1), "logit[wrong] - logit[correct]"),
        (_dla(bias=False), "'bias' for ln_final's b and b_U"),
    ],
    ids=["no-centring", "no-scale", "own-scale", "no-w", "reversed", "no-bias"],
)
def test_direct_logit_attribution_checker_rejects(fn, message):
    assert_rejects(checks.check_direct_logit_attribution, fn, message)


# --- Against HuggingFace's GPT-2, an implementation written independently ------------------


def test_cache_agrees_with_huggingface_gpt2_on_the_streams_patterns_and_logits():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = random_model(TINY, False, seed=5)
    with torch.no_grad():
        model.unembed.b_U.zero_()  # HF's lm_head has no bias
    cfg = TINY
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=cfg.d_vocab,
            n_positions=cfg.n_ctx,
            n_embd=cfg.d_model,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.d_mlp,
            layer_norm_epsilon=cfg.layer_norm_eps,
            tie_word_embeddings=False,
            attn_implementation="eager",
        )
    ).eval()
    side = "n_heads d_model d_head -> d_model (n_heads d_head)"
    with torch.no_grad():
        hf.transformer.wte.weight.copy_(model.embed.W_E)
        hf.transformer.wpe.weight.copy_(model.pos_embed.W_pos)
        for ours, theirs in zip(model.blocks, hf.transformer.h, strict=True):
            attn = ours.attn
            theirs.ln_1.weight.copy_(ours.ln1.w), theirs.ln_1.bias.copy_(ours.ln1.b)
            W = [einops.rearrange(w, side) for w in (attn.W_Q, attn.W_K, attn.W_V)]
            theirs.attn.c_attn.weight.copy_(torch.cat(W, dim=1))
            theirs.attn.c_attn.bias.copy_(torch.cat([attn.b_Q.flatten(), attn.b_K.flatten(),
                                                    attn.b_V.flatten()]))  # fmt: skip
            theirs.attn.c_proj.weight.copy_(einops.rearrange(attn.W_O, "h e d -> (h e) d"))
            theirs.attn.c_proj.bias.copy_(attn.b_O)
            theirs.ln_2.weight.copy_(ours.ln2.w), theirs.ln_2.bias.copy_(ours.ln2.b)
            theirs.mlp.c_fc.weight.copy_(ours.mlp.W_in), theirs.mlp.c_fc.bias.copy_(ours.mlp.b_in)
            theirs.mlp.c_proj.weight.copy_(ours.mlp.W_out)
            theirs.mlp.c_proj.bias.copy_(ours.mlp.b_out)
        hf.transformer.ln_f.weight.copy_(model.ln_final.w)
        hf.transformer.ln_f.bias.copy_(model.ln_final.b)
        hf.lm_head.weight.copy_(model.unembed.W_U.T)
        out = hf(TOKENS, output_hidden_states=True, output_attentions=True)
    logits, cache = ref.run_with_cache(model, TOKENS)
    close = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, out.logits, **close)
    for i in range(cfg.n_layers):
        # HF's hidden_states[i] is the stream into block i; its last is ln_f's output.
        torch.testing.assert_close(
            cache[f"blocks.{i}.hook_resid_pre"], out.hidden_states[i], **close
        )
        torch.testing.assert_close(
            cache[f"blocks.{i}.attn.hook_pattern"], out.attentions[i], **close
        )
    torch.testing.assert_close(cache["ln_final.hook_normalized"], out.hidden_states[-1], **close)
