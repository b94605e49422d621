"""Chapter 5's cache: the run_with_hooks, run_with_cache and attention_with_hooks checkers
accept correct code however it is written and reject activations recorded at the wrong point
(before or after a LayerNorm, the pattern for the scores, resid_pre for resid_mid, ...) with
a diagnosis; run_with_cache's patches are checked to be applied, every one, recorded as the
run used them, and refused where their name or shape is wrong; and the reference's cache
agrees with HuggingFace's GPT-2, written independently, on the streams, the patterns and the
logits."""

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

    def run_with_cache(model, tokens, patches=None):
        logits, cache = ref.run_with_cache(model, tokens, patches)
        mutate(cache, model)
        return logits, cache

    return run_with_cache


def test_run_with_hooks_checker_accepts_the_reference(capsys):
    assert_accepts(checks.check_run_with_hooks, ref.run_with_hooks, capsys)
    assert_accepts(checks.check_run_with_cache, ref.run_with_cache, capsys)
    assert_accepts(checks.check_attention_with_hooks, ref.attention_with_hooks, capsys)


def test_run_with_cache_checker_accepts_another_correct_implementation(capsys):
    def run_with_cache(model, tokens, patches=None):
        """Written out without run_with_hooks: each activation through `put`."""
        patches, cache = patches or {}, {}

        def put(name, x):
            if name in patches:
                if patches[name].shape != x.shape:
                    raise ValueError(f"{name}: {list(patches[name].shape)}, not {list(x.shape)}")
                x = patches[name]
            cache[name] = x
            return x

        def norm(ln, x, name):
            var = x.var(-1, keepdim=True, unbiased=False)
            scale = put(f"{name}.hook_scale", (var + ln.cfg.layer_norm_eps).sqrt())
            return put(
                f"{name}.hook_normalized", (x - x.mean(-1, keepdim=True)) / scale * ln.w + ln.b
            )

        x = put("hook_embed", model.embed.W_E[tokens])
        x = x + put("hook_pos_embed", model.pos_embed(tokens))
        for i, block in enumerate(model.blocks):
            b, attn = f"blocks.{i}", block.attn
            x = put(f"{b}.hook_resid_pre", x)
            h = norm(block.ln1, x, f"{b}.ln1")
            q, k, v = (
                put(f"{b}.attn.hook_{n}", torch.einsum("bpd,hde->bphe", h, W) + bias)
                for n, W, bias in
                [("q", attn.W_Q, attn.b_Q), ("k", attn.W_K, attn.b_K), ("v", attn.W_V, attn.b_V)]
            )  # fmt: skip
            scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / attn.cfg.d_head**0.5
            mask = torch.tril(torch.ones(scores.shape[-2:], dtype=torch.bool))
            scores = put(f"{b}.attn.hook_attn_scores", torch.where(mask, scores, float("-inf")))
            pattern = put(f"{b}.attn.hook_pattern", torch.softmax(scores, -1))
            z = put(f"{b}.attn.hook_z", (pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3))
            x = x + put(f"{b}.hook_attn_out", torch.einsum("bphe,hed->bpd", z, attn.W_O) + attn.b_O)
            if getattr(block, "mlp", None) is None:  # attention-only (chapter 5b)
                x = put(f"{b}.hook_resid_post", x)
                continue
            x = put(f"{b}.hook_resid_mid", x)
            h = norm(block.ln2, x, f"{b}.ln2")
            pre = put(f"{b}.mlp.hook_pre", h @ block.mlp.W_in + block.mlp.b_in)
            post = put(f"{b}.mlp.hook_post", F.gelu(pre, approximate="tanh"))
            out = put(f"{b}.hook_mlp_out", post @ block.mlp.W_out + block.mlp.b_out)
            x = put(f"{b}.hook_resid_post", x + out)
        logits = model.unembed(norm(model.ln_final, x, "ln_final"))
        if unknown := set(patches) - set(cache):
            raise KeyError(f"no such activation: {sorted(unknown)}")
        return logits, cache

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


# --- run_with_cache's patches --------------------------------------------------------------


def patching_variant(
    *,
    record_first=False,
    check_names=True,
    check_shapes=True,
    only="",
    clean_cache=False,
    clean_logits=False,
    copy_into_patch=False,
    add=False,
):
    """A run_with_cache over run_with_hooks, correct but for one mistake: recording before
    patching, no check of names or shapes, only one patch applied (`only`: the first of the
    dict, or the first the run reaches), the clean run's cache or logits returned,
    `patch.copy_(x)` for `x.copy_(patch)`, or the patch added."""

    def run_with_cache(model, tokens, patches=None):
        patches = dict(patches or {})
        if only == "first of the dict":
            patches = dict(list(patches.items())[:1])
        cache, applied = {}, []

        def hook(name, x):
            if record_first:
                cache[name] = x
            if name in patches and not (only == "first in the run" and applied):
                value = patches[name]
                if check_shapes and value.shape != x.shape:
                    raise ValueError(f"{name}: {tuple(value.shape)} is not {tuple(x.shape)}")
                if copy_into_patch:
                    value.copy_(x)  # meant x.copy_(value)
                x = x + value if add else value
                applied.append(name)
            if not record_first:
                cache[name] = x
            return x

        logits = ref.run_with_hooks(model, tokens, hook)
        if check_names == "first":
            for name in patches:
                if name not in cache:
                    raise KeyError(name)
        elif check_names and (unknown := set(patches) - set(cache)):
            raise KeyError(f"unknown: {sorted(unknown)}")
        if clean_cache:
            cache = ref.run_with_cache(model, tokens)[1]
        if clean_logits:
            logits = ref.run_with_cache(model, tokens)[0]
        return logits, cache

    return run_with_cache


PATCH_MISTAKES = {
    "records before patching": (
        dict(record_first=True),
        "holds what the run computed there before the patch: record after replacing",
    ),
    "ignores unknown names": (
        dict(check_names=False),
        "blocks.0.resid_pre",
        "returned without an error",
        "KeyError",
    ),
    "names only the first unknown name": (
        dict(check_names="first"),
        "should name ln_final.hook_normalised",
    ),
    "patches only the first block it reaches": (
        dict(only="first in the run"),
        "applied only the patch of blocks.0.attn.hook_z, of 3",
    ),
    "applies only the first patch of the dict": (
        dict(only="first of the dict"),
        "applied only the patch of blocks.1.attn.hook_z, of 3",
    ),
    "no shape check": (dict(check_shapes=False), "returned without an error", "ValueError"),
    "returns the clean run's cache": (
        dict(clean_cache=True),
        "is the clean run's, not the patched",
    ),
    "writes the activation into the patch": (
        dict(copy_into_patch=True),
        "changed the patch value of hook_embed in place",
    ),
    "returns the clean run's logits": (
        dict(clean_logits=True),
        "returned the clean run's logits, though your cache is the patched run's",
    ),
    "adds the patch": (dict(add=True), "added the patch to the activation"),
}


@pytest.mark.parametrize("mistake", PATCH_MISTAKES)
def test_run_with_cache_checker_rejects_a_patch_mistake(mistake):
    options, *message = PATCH_MISTAKES[mistake]
    assert_rejects(checks.check_run_with_cache, patching_variant(**options), *message)


def test_run_with_cache_checker_rejects_a_run_that_ignores_the_patches():
    def run_with_cache(model, tokens, patches=None):
        return ref.run_with_cache(model, tokens)

    assert_rejects(checks.check_run_with_cache, run_with_cache, "ignored the patches")


@pytest.mark.parametrize(
    "caught, error, message",
    [
        (KeyError, KeyError("unknown patch"), "should name blocks.0.resid_pre"),
        (ValueError, ValueError("wrong shape"), "should name hook_embed, (6, 48), (2, 6, 48)"),
        (KeyError, RuntimeError("blocks.0.resid_pre"), "Expected a KeyError"),
    ],
    ids=["key-error-naming-nothing", "value-error-naming-nothing", "another-error"],
)
def test_run_with_cache_checker_wants_the_errors_to_name_what_is_wrong(caught, error, message):
    def run_with_cache(model, tokens, patches=None):
        try:
            return ref.run_with_cache(model, tokens, patches)
        except caught:
            raise error from None

    assert_rejects(checks.check_run_with_cache, run_with_cache, message)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda m, t, p=None: ref.run_with_cache(m, t, p)[1], "pair"),
        (lambda m, t, p=None: (ref.run_with_cache(m, t, p)[0], None), "the cache should be a dict"),
        (lambda m, t, p=None: (ref.run_with_cache(m, t, p)[0] * torch.nan, {}), "NaN"),
        (lambda m, t: ref.run_with_cache(m, t), "takes 2 positional arguments"),
    ],
    ids=["cache-alone", "no-cache", "nan", "no-patches-argument"],
)
def test_run_with_cache_checker_turns_broken_code_into_a_verdict(fn, message):
    assert_rejects(checks.check_run_with_cache, fn, message)


def test_run_with_cache_checker_accepts_a_pop_from_a_copy_and_a_class(capsys):
    def popping(model, tokens, patches=None):
        left, cache = dict(patches or {}), {}

        def hook(name, x):
            if (value := left.pop(name, None)) is not None:
                if value.shape != x.shape:
                    raise ValueError(f"patch of {name} is {value.shape}, the run's {x.shape}")
                x = value
            cache[name] = x
            return x

        logits = ref.run_with_hooks(model, tokens, hook)
        if left:
            raise KeyError(", ".join(left))
        return logits, cache

    class Recorder:
        def __init__(self, patches):
            self.patches, self.cache, self.used = patches, {}, set()

        def __call__(self, name, x):
            if name in self.patches:
                self.used.add(name)
                if self.patches[name].shape != x.shape:
                    raise ValueError(f"{name} {list(self.patches[name].shape)} {list(x.shape)}")
                x = self.patches[name].clone()  # a copy in the cache is as good
            self.cache[name] = x
            return x

    def with_a_class(model, tokens, patches=None):
        recorder = Recorder(patches or {})
        logits = ref.run_with_hooks(model, tokens, recorder)
        if unknown := recorder.patches.keys() - recorder.used:
            raise KeyError(sorted(unknown))
        return logits, recorder.cache

    assert_accepts(checks.check_run_with_cache, popping, capsys)
    assert_accepts(checks.check_run_with_cache, with_a_class, capsys)


def test_run_with_patch_is_run_with_cache_with_one_patch():
    model = random_model(TINY, False, seed=9)
    _, cache = ref.run_with_cache(model, TOKENS)
    value = torch.zeros_like(cache["blocks.1.hook_resid_post"])
    logits = ref.run_with_patch(model, TOKENS, "blocks.1.hook_resid_post", value)
    at_zero = model.ln_final.b @ model.unembed.W_U + model.unembed.b_U
    torch.testing.assert_close(logits, at_zero.expand_as(logits))
    with pytest.raises(KeyError, match="blocks.1.resid_post"):
        ref.run_with_patch(model, TOKENS, "blocks.1.resid_post", value)
