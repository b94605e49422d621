"""Chapter 5's residual stream: the reference's claims (the cache changes nothing, the parts
sum to the stream, the shares sum to the logit difference) hold on random models,
attention-only ones included; the decomposition, count, logit-lens and attribution checkers
accept correct code however it is written and reject wrong sums, counts and scales with a
diagnosis. The cache's checkers are tested in test_residual_cache.py."""

import einops
import pytest
import torch

from checks import residual as checks
from checks.residual import random_model
from solutions import residual as ref
from solutions.config import GPT2_SMALL, TINY
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
            if f"blocks.{i}.hook_mlp_out" in cache:  # the cache, not the block, says
                parts.append(cache[f"blocks.{i}.hook_mlp_out"])
                labels.append(f"L{i} MLP")
        return torch.stack(parts), labels

    assert_accepts(checks.check_decompose_resid, decompose_resid, capsys)


def _decompose(*, b_o="own", per_layer=False, mlp_label="L{i} MLP", assume_mlp=False):
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
            # An attention-only block (chapter 5b's) may have no `mlp` at all.
            mlp = block.mlp if assume_mlp else getattr(block, "mlp", None)
            if mlp is not None:
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
        (_decompose(assume_mlp=True), "has no attribute 'mlp'"),
    ],
    ids=["b_O-missing", "b_O-split", "layers-not-heads", "labels", "no-labels", "mlp-assumed"],
)
def test_decompose_resid_checker_rejects(fn, message):
    assert_rejects(checks.check_decompose_resid, fn, message)


# --- count_stream_vectors ------------------------------------------------------------------


def test_count_stream_vectors_checker_accepts_the_reference(capsys):
    assert_accepts(checks.check_count_stream_vectors, ref.count_stream_vectors, capsys)


def _count(**overrides):
    """count_stream_vectors with some counts computed another way: f(cfg, n_ctx, pos, biases)."""

    def count_stream_vectors(cfg, n_ctx=1, *, pos_embed=True, biases=True):
        counts = ref.count_stream_vectors(cfg, n_ctx, pos_embed=pos_embed, biases=biases)
        for part, f in overrides.items():
            counts[part] = f(cfg, n_ctx, pos_embed, biases)
        return counts

    return count_stream_vectors


@pytest.mark.parametrize(
    "fn, message",
    [
        (_count(messages=lambda c, n, p, b: c.n_heads * n), "n_layers · n_heads"),
        (_count(messages=lambda c, n, p, b: c.n_layers * c.n_heads), "n_layers · n_heads · n_ctx"),
        (_count(memories=lambda c, n, p, b: c.n_layers * c.d_mlp * n), "not grow with the"),
        (_count(memories=lambda c, n, p, b: c.n_layers * c.d_model), "n_layers · d_mlp"),
        (_count(embeddings=lambda c, n, p, b: 2 * n), "where it is learned"),
        (_count(biases=lambda c, n, p, b: 2 * c.n_layers * n), "b_O and b_out"),
        (
            _count(messages=lambda c, n, p, b: c.n_layers * (c.d_model // c.d_head) * n),
            "n_layers · n_heads",
        ),
    ],
    ids=[
        "one-layer",
        "one-position",
        "memories-per-position",
        "d_model",
        "embeddings",
        "biases",
        "heads-from-d_model",
    ],  # fmt: skip
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


def _lens(*, final=True, frozen=False, points="pre", b_U=True):
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
            out.append(model.unembed(s) if b_U else s @ model.unembed.W_U)
        return torch.stack(out)

    return logit_lens


@pytest.mark.parametrize(
    "fn, message",
    [
        (_lens(final=False), "left out ln_final"),
        (_lens(frozen=True), "reused the final run's ln_final scale"),
        (_lens(points="post"), "left out the embeddings alone"),
        (_lens(b_U=False), "left out b_U"),
    ],
    ids=["no-ln_final", "frozen-scale", "resid_post", "no-b_U"],
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


def _dla(*, centre=True, scale="frozen", w=True, sign=1, bias=True, ln_b=True, with_b_U=True):
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
        b = sign * (
            (ln.b @ (W_U[:, correct] - W_U[:, wrong]) if ln_b else 0)
            + ((b_U[correct] - b_U[wrong]) if with_b_U else 0)
        )
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
        (_dla(ln_b=False), "left ln_final's b out of the bias"),
        (_dla(with_b_U=False), "left b_U out of the bias"),
    ],
    ids=[
        "no-centring",
        "no-scale",
        "own-scale",
        "no-w",
        "reversed",
        "no-bias",
        "no-ln-b",
        "no-b_U",
    ],
)
def test_direct_logit_attribution_checker_rejects(fn, message):
    assert_rejects(checks.check_direct_logit_attribution, fn, message)


def _changes_the_cache(fn):
    """fn, then one cache entry changed in place, as `x = cache[...]; x += ...` does."""

    def learner(cache, *args):
        out = fn(cache, *args)
        stream = cache["blocks.0.hook_resid_pre"]
        stream += 1.0
        return out

    return learner


@pytest.mark.parametrize(
    "check, fn",
    [
        (checks.check_decompose_resid, ref.decompose_resid),
        (checks.check_logit_lens, ref.logit_lens),
        (checks.check_direct_logit_attribution, ref.direct_logit_attribution),
    ],
    ids=["decompose_resid", "logit_lens", "direct_logit_attribution"],
)
def test_cache_readers_reject_a_cache_changed_in_place(check, fn):
    assert_rejects(
        check, _changes_the_cache(fn), "changed cache['blocks.0.hook_resid_pre'] in place"
    )
