"""Chapter 5's cache: the run_with_hooks, run_with_cache, attention_with_hooks and
run_with_patch checkers accept correct code however it is written and reject activations
recorded at the wrong point (before or after a LayerNorm, the pattern for the scores,
resid_pre for resid_mid, ...) with a diagnosis; and the reference's cache agrees with
HuggingFace's GPT-2, written independently, on the streams, the patterns and the logits."""

import einops
import pytest
import torch
import torch.nn.functional as F

from checks import residual as checks
from checks.residual import random_model
from solutions import gpt2
from solutions import residual as ref
from solutions.config import TINY
from support import assert_accepts, assert_rejects

TOKENS = torch.randint(TINY.d_vocab, (2, 7), generator=torch.Generator().manual_seed(0))

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
            if getattr(block, "mlp", None) is None:  # attention-only (chapter 5b)
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


# --- Against HuggingFace's GPT-2, an implementation written independently ------------------


def test_cache_agrees_with_huggingface_gpt2_on_the_streams_patterns_and_logits():
    model = random_model(TINY, False, seed=5)
    with torch.no_grad():
        model.unembed.b_U.zero_()  # HF's lm_head has no bias
    cfg = TINY
    hf = gpt2.to_huggingface(model)
    hf.set_attn_implementation("eager")  # the one that returns attention patterns
    with torch.no_grad():
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


@pytest.mark.parametrize(
    "ignored", ["hook_q", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z"]
)
def test_attention_with_hooks_checker_rejects_attention_that_ignores_what_a_hook_returns(ignored):
    def attention_with_hooks(attn, normalized, name, hook):
        def wrapped(n, x):
            out = hook(n, x)
            return x if n.endswith(ignored) else out

        return ref.attention_with_hooks(attn, normalized, name, wrapped)

    assert_rejects(
        checks.check_attention_with_hooks,
        attention_with_hooks,
        f"a hook that changes attn.{ignored} did not change the attention output",
        "`x = hook(name, x)`",
    )


def test_run_with_patch_checker_rejects_a_patch_of_the_stream_alone():
    def run_with_patch(model, tokens, name, value):
        """Patches by running the blocks' own forward: it reaches no name inside a block."""
        residual = value if name == "hook_embed" else model.embed(tokens)
        residual = residual + model.pos_embed(tokens)
        for i, block in enumerate(model.blocks):
            residual = value if name == f"blocks.{i}.hook_resid_pre" else residual
            residual = block(residual)
            residual = value if name == f"blocks.{i}.hook_resid_post" else residual
        return model.unembed(model.ln_final(residual))

    assert_rejects(
        checks.check_run_with_patch, run_with_patch, "blocks.0.attn.hook_pattern", "did not patch"
    )


def test_run_with_hooks_checker_rejects_a_run_that_ignores_what_the_scores_hook_returns():
    def run_with_hooks(model, tokens, hook):
        def wrapped(n, x):
            out = hook(n, x)
            return x if n.endswith("hook_attn_scores") else out

        return ref.run_with_hooks(model, tokens, wrapped)

    assert_rejects(
        checks.check_run_with_hooks,
        run_with_hooks,
        "a hook that changes blocks.0.attn.hook_attn_scores did not change the logits",
    )


def test_attention_with_hooks_checker_rejects_d_head_taken_as_d_model_over_n_heads():
    def attention_with_hooks(attn, normalized, name, hook):
        d_head = attn.cfg.d_model // attn.cfg.n_heads  # not cfg.d_head in every model
        factor = (attn.cfg.d_head / d_head) ** 0.5

        def wrapped(n, x):  # the scores as they are scaled by sqrt(d_head) from d_model
            return hook(n, x * factor) / factor if n.endswith("hook_attn_scores") else hook(n, x)

        return ref.attention_with_hooks(attn, normalized, name, wrapped)

    assert_rejects(checks.check_attention_with_hooks, attention_with_hooks, "d_model // n_heads")


def test_run_with_hooks_checker_names_a_layer_read_through_the_other_layer_norm():
    from solutions.residual import attention_with_hooks, layer_norm_with_hooks, mlp_with_hooks

    def run_with_hooks(model, tokens, hook):
        x = hook("hook_embed", model.embed(tokens)) + hook(
            "hook_pos_embed", model.pos_embed(tokens)
        )
        for i, block in enumerate(model.blocks):
            b = f"blocks.{i}"
            x = hook(f"{b}.hook_resid_pre", x)
            a = attention_with_hooks(
                block.attn, layer_norm_with_hooks(block.ln1, x, f"{b}.ln1", hook), f"{b}.attn", hook
            )
            x = x + hook(f"{b}.hook_attn_out", a)
            if getattr(block, "mlp", None) is None:
                x = hook(f"{b}.hook_resid_post", x)
                continue
            x = hook(f"{b}.hook_resid_mid", x)
            read = layer_norm_with_hooks(block.ln1, x, f"{b}.ln2", hook)  # ln1 again
            x = hook(f"{b}.hook_resid_post", x + hook(f"{b}.hook_mlp_out", mlp_with_hooks(
                block.mlp, read, f"{b}.mlp", hook)))  # fmt: skip
        return model.unembed(layer_norm_with_hooks(model.ln_final, x, "ln_final", hook))

    assert_rejects(checks.check_run_with_hooks, run_with_hooks, "normalised with ln1's w and b")
