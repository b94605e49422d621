"""Checkers for chapter 5's residual stream (solutions/residual.py).

Models have every parameter random (LayerNorm w and b included, so that an activation taken
before a LayerNorm never equals one taken after it), three layers or two, and come with and
without MLPs (attention-only blocks record no ln2, MLP or resid_mid, as in TransformerLens).
A recorded activation that is wrong is compared with every other activation of the run: if
it equals one, the message says which TransformerLens name it belongs under.
"""

import torch

from checks._core import _close, exercise, kind_of, plural, randomize, seeded
from course.config import GPT2_SMALL, TINY, Config
from solutions import residual as ref
from solutions.transformer import Transformer

__all__ = [
    "check_attention_with_hooks",
    "check_run_with_hooks",
    "check_run_with_cache",
    "check_run_with_patch",
    "check_decompose_resid",
    "check_count_stream_vectors",
    "check_logit_lens",
    "check_direct_logit_attribution",
]

# Heads that are not d_model // n_heads wide, and an MLP that is not 4 · d_model: a value
# computed from d_model where the config has its own shows.
ODD = Config(d_model=20, d_vocab=37, n_ctx=16, d_head=4, d_mlp=28, n_heads=3, n_layers=3)
SCALE = 0.3  # random weights this size keep the softmax and GELU away from saturation
# (config, attention-only, batch, positions). Attention-only blocks come both ways: with
# `mlp` set to None, and without an `mlp` at all (chapter 5b's AttnOnlyBlock).
CASES = [(TINY, False, 2, 6), (ODD, False, 3, 5), (ODD, True, 2, 4), (TINY, "no mlp", 1, 1)]
NUDGED = {0, 2}  # the cases in which each activation in turn is changed by a hook


def random_model(cfg: Config, attn_only: bool | str, seed: int) -> Transformer:
    """A model with every parameter random; attention-only blocks have mlp = ln2 = None, or
    (attn_only="no mlp") no mlp and ln2 at all."""
    model = randomize(Transformer(cfg), seed=seed, scale=SCALE)
    if attn_only:
        for block in model.blocks:
            block.mlp, block.ln2 = None, None
            if attn_only == "no mlp":
                del block.mlp, block.ln2
    return model.requires_grad_(False)


def _cases(check, seed: int):
    """Each case's model and tokens, inside its named case."""
    for i, (cfg, attn_only, batch, posn) in enumerate(CASES):
        label = "TINY" if cfg == TINY else "ODD"
        kind = {False: "with MLPs", True: "attention-only (mlp None)"}.get(
            attn_only, "attention-only (no mlp)"
        )
        with check.case(f"{label} {kind}, batch {batch}, {plural(posn, 'position')}"):
            model = random_model(cfg, attn_only, seed=seed + i)
            tokens = torch.randint(cfg.d_vocab, (batch, posn), generator=seeded(seed + 50 + i))
            yield model, tokens


def _specific_mistakes(name: str, expected: dict[str, torch.Tensor], model) -> dict:
    """Activations recorded one step too early or too late, where no other hook holds them."""
    x = expected[name]
    mistakes = {}
    if name.endswith("attn.hook_attn_scores"):
        d_head = expected[name.replace("hook_attn_scores", "hook_q")].shape[-1]
        mistakes["recorded the scores before dividing by sqrt(d_head)"] = x * d_head**0.5
        guess = model.cfg.d_model // model.cfg.n_heads
        if guess != d_head:
            mistakes[f"took d_head to be d_model // n_heads ({guess}): read it from the "
                     f"weights or cfg.d_head ({d_head})"] = x * (d_head / guess) ** 0.5  # fmt: skip
    if name.endswith("hook_pattern") or name.endswith("hook_attn_scores"):
        mistakes["recorded it [batch, query_posn, n_heads, key_posn]: TransformerLens's "
                 "is [batch, n_heads, query_posn, key_posn]"] = x.transpose(1, 2)  # fmt: skip
        mistakes["transposed it: rows are queries, columns keys"] = x.transpose(-1, -2)
    if name.endswith("hook_normalized"):
        ln = name.rsplit(".", 1)[0]
        scale = expected[f"{ln}.hook_scale"]
        module = _module(model, ln)
        x_hat = (x - module.b) / module.w
        mistakes["recorded it before w and b: the course's hook_normalized (as "
                 "HookedTransformer's) is after them, the LayerNorm's output"] = x_hat  # fmt: skip
        mistakes["recorded it before dividing by the scale"] = x_hat * scale
    if name.endswith("hook_scale"):
        mistakes["recorded the variance, not its square root (with eps)"] = x.pow(2)
        mistakes["recorded 1 / scale: TransformerLens records sqrt(var + eps), the divisor"] = 1 / x
    if name.endswith("attn.hook_q") or name.endswith("attn.hook_k") or name.endswith("hook_z"):
        mistakes["recorded it [batch, n_heads, posn, d_head]: TransformerLens's is "
                 "[batch, posn, n_heads, d_head]"] = x.transpose(1, 2)  # fmt: skip
    return mistakes


def _module(model, dotted: str):
    for part in dotted.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def _finite(t):
    """The masked scores' -inf as 0, so that tolerances (scaled by the largest value) hold."""
    return t.masked_fill(t.isinf(), 0.0) if isinstance(t, torch.Tensor) else t


def _check_mask(check, name: str, have, want: torch.Tensor) -> None:
    if not isinstance(have, torch.Tensor) or have.shape != want.shape:
        return
    if torch.isnan(have).any():
        check.fail(f"your {name} holds NaN: mask with -inf, never multiply by it.")
    if not torch.equal(have.isneginf(), want.isneginf()):
        if (have < -1e3).eq(want.isneginf()).all():
            check.fail(
                f"your {name} is masked with a large finite number: TransformerLens records "
                "the scores masked with -inf (the pattern is the same, the recorded scores not)."
            )
        check.fail(
            f"your {name} is not masked as TransformerLens records it: -inf at every future "
            "key (key_posn > query_posn), and only there. Record the scores after the mask."
        )


def compare_caches(check, got, expected: dict[str, torch.Tensor], model) -> None:
    """Every name recorded, nothing else, each activation the reference's: a wrong one is
    named after the activation it matches, if any."""
    if not isinstance(got, dict):
        check.fail(f"the cache should be a dict from names to tensors, got {kind_of(got)}.")
    if not got:
        check.fail("nothing was recorded: pass each activation through the hook, by its name.")
    missing = [name for name in expected if name not in got]
    extra = [name for name in got if name not in expected]
    if getattr(model.blocks[0], "mlp", None) is None:
        for name in extra:
            if name.endswith("hook_resid_mid") or ".ln2." in name or ".mlp." in name:
                check.fail(
                    f"recorded {name} in an attention-only model: its blocks have no MLP, so "
                    "TransformerLens records no resid_mid, ln2 or mlp there. Skip them when a "
                    "block has no `mlp` or its `mlp` is None: `getattr(block, 'mlp', None)`."
                )
    if missing or extra:
        more = " ..." if len(missing) > 6 else ""
        check.fail(
            f"the names differ from TransformerLens's. Missing: {missing[:6] or 'none'}{more}; "
            f"unexpected: {extra[:6] or 'none'}."
        )
    finite = {name: _finite(value) for name, value in expected.items()}
    for name, want in finite.items():
        have = got[name]
        if name.endswith("hook_attn_scores"):
            _check_mask(check, name, have, expected[name])
        have = _finite(have)
        if isinstance(have, torch.Tensor) and have.shape == want.shape:
            if _close(have, want, 1e-4, 1e-5):
                continue
            for other, value in finite.items():
                if other != name and value.shape == want.shape and _close(have, value, 1e-4, 1e-5):
                    check.fail(
                        f"what you recorded as {name} is what TransformerLens records as "
                        f"{other}: record each activation where it is computed (and never "
                        "change it in place afterwards: `x += ...` changes what was recorded)."
                    )
        check.tensor(have, want, what=name, mistakes=_specific_mistakes(name, finite, model))


@exercise(ref.attention_with_hooks)
def check_attention_with_hooks(check, attention_with_hooks):
    for i, (model, tokens) in enumerate(_cases(check, seed=0)):
        attn = model.blocks[0].attn
        x = torch.randn(*tokens.shape, model.cfg.d_model, generator=seeded(7))
        expected, got = {}, {}
        want = ref.attention_with_hooks(attn, x, "attn", _recorder(expected))
        out = check.call(attention_with_hooks, attn, x, "attn", _recorder(got))
        compare_caches(check, got, expected, model)
        check.tensor(out, want, what="attention output (attn_out)")
        check.tensor(out, attn(x), what="attention output, against the model's own attn")
        if i in NUDGED:
            _check_nudges(
                check,
                lambda hook, attn=attn, x=x: attention_with_hooks(attn, x, "attn", hook),
                lambda hook, attn=attn, x=x: ref.attention_with_hooks(attn, x, "attn", hook),
                want,
                expected,
                what="attention_with_hooks",
                output="attention output",
            )


def _recorder(cache: dict) -> ref.Hook:
    def record(name, activation):
        cache[name] = activation
        return activation

    return record


def _nudge(target: str) -> ref.Hook:
    """A hook that changes one activation (by a different amount at every position)."""

    def hook(name, activation):
        if name != target:
            return activation
        noise = torch.rand(activation.shape, generator=seeded(3))
        # Added to the scores (a masked -inf stays -inf); elsewhere a factor in [0.5, 1.5).
        if name.endswith("hook_attn_scores"):
            return activation + noise
        return activation * (0.5 + noise)

    return hook


def _check_nudges(check, learner, reference, want, names, *, what: str, output: str) -> None:
    """What a hook returns is what the run goes on with: change each activation in turn (in
    one model with MLPs and one without: a run per name) and compare the outputs."""
    for name in names:
        changed = check.call(learner, _nudge(name), what=what)
        want_changed = reference(_nudge(name))
        unchanged = isinstance(changed, torch.Tensor) and _close(changed, want, 1e-4, 1e-5)
        if unchanged and not _close(want_changed, want, 1e-4, 1e-5):
            check.fail(
                f"a hook that changes {name} did not change the {output}: go on with what "
                f"`hook` returns, `x = hook(name, x)`, not with the value you passed it."
            )
        check.tensor(changed, want_changed, what=f"{output} when a hook changes {name}")


@exercise(ref.run_with_hooks)
def check_run_with_hooks(check, run_with_hooks):
    for i, (model, tokens) in enumerate(_cases(check, seed=10)):
        expected = {}
        want = ref.run_with_hooks(model, tokens, _recorder(expected))
        got = {}
        logits = check.call(run_with_hooks, model, tokens, _recorder(got), what="run_with_hooks")
        compare_caches(check, got, expected, model)
        check.tensor(logits, want, what="logits")
        if i in NUDGED:
            _check_nudges(
                check,
                lambda hook, model=model, tokens=tokens: run_with_hooks(model, tokens, hook),
                lambda hook, model=model, tokens=tokens: ref.run_with_hooks(model, tokens, hook),
                want,
                expected,
                what="run_with_hooks",
                output="logits",
            )


@exercise(ref.run_with_cache)
def check_run_with_cache(check, run_with_cache):
    for model, tokens in _cases(check, seed=20):
        want, expected = ref.run_with_cache(model, tokens)
        out = check.call(run_with_cache, model, tokens)
        logits, cache = check.pair(out, "(logits, cache)")
        compare_caches(check, cache, expected, model)
        check.tensor(logits, want, what="logits")
        if getattr(model.blocks[0], "mlp", None) is not None:
            check.tensor(logits, model(tokens), what="logits, against model(tokens)")


@exercise(ref.run_with_patch)
def check_run_with_patch(check, run_with_patch):
    for model, tokens in _cases(check, seed=30):
        _, clean = ref.run_with_cache(model, tokens)
        other = (tokens + 1) % model.cfg.d_vocab
        want_other, other_cache = ref.run_with_cache(model, other)
        last = f"blocks.{len(model.blocks) - 1}.hook_resid_post"
        # Known answers: the other prompt's embeddings (or its whole stream at block 0) give
        # the other prompt's logits; a zero final stream gives b @ W_U + b_U everywhere, as
        # ln_final turns a zero vector into its b.
        ln, unembed = model.ln_final, model.unembed
        at_zero = (ln.b @ unembed.W_U + unembed.b_U).expand_as(want_other)
        answers = [
            ("hook_embed", other_cache["hook_embed"], want_other, "the other prompt's logits"),
            ("blocks.0.hook_resid_pre", other_cache["blocks.0.hook_resid_pre"], want_other,
             "the other prompt's logits"),
            (last, torch.zeros_like(clean[last]), at_zero, "ln_final.b @ W_U + b_U everywhere"),
        ]  # fmt: skip
        # And one inside attention, which a run through the blocks' own forward never reaches.
        inside = "blocks.0.attn.hook_pattern"
        answers.append((inside, other_cache[inside],
                        ref.run_with_patch(model, tokens, inside, other_cache[inside]),
                        "the clean run with the other prompt's layer-0 pattern"))  # fmt: skip
        clean_logits = ref.run_with_hooks(model, tokens, lambda n, x: x)
        for name, value, want, meaning in answers:
            got = check.call(run_with_patch, model, tokens, name, value)
            check.tensor(
                got,
                want,
                what=f"logits with {name} patched (expected: {meaning})",
                mistakes={"did not patch: these are the clean run's logits": clean_logits},
            )


def _call_on_cache(check, fn, cache: dict[str, torch.Tensor], *args, what: str):
    """Call learner code that reads a cache; a cache entry changed in place fails the case
    (check.call sees tensors passed directly, not those inside a dict)."""
    before = {name: value.clone() for name, value in cache.items()}
    out = check.call(fn, cache, *args, what=what)
    for name, value in before.items():
        if name not in cache or not torch.equal(cache[name], value):
            check.fail(
                f"your {what} changed cache[{name!r}] in place (or removed it): the cache "
                "is read-only, and later reads of it would see your change. Compute new "
                "tensors (`x = x + ...`, not `x += ...`)."
            )
    return out


@exercise(ref.decompose_resid)
def check_decompose_resid(check, decompose_resid):
    for model, tokens in _cases(check, seed=40):
        _, cache = ref.run_with_cache(model, tokens)
        want, labels = ref.decompose_resid(cache, model)
        out = _call_on_cache(check, decompose_resid, cache, model, what="decompose_resid")
        parts, got_labels = check.pair(out, "(components, labels)")
        check.equal(
            list(got_labels) if isinstance(got_labels, tuple | list) else got_labels,
            labels,
            what="labels",
            hint=" Per layer: each head (L0H0, ...), then the layer's b_O (L0 b_O), then its "
            "MLP (L0 MLP) where it has one.",
        )
        heads_with_bias = want.clone()
        for i, label in enumerate(labels):
            if label.endswith(" b_O"):
                n = model.cfg.n_heads
                heads_with_bias[i - n : i] += want[i] / n
                heads_with_bias[i] = 0.0
        check.tensor(
            parts,
            want,
            what="components",
            mistakes={"split b_O among the heads: keep it whole, as its own component": (
                heads_with_bias
            )},
        )  # fmt: skip
        resid = cache[f"blocks.{len(model.blocks) - 1}.hook_resid_post"]
        check.tensor(parts.sum(0), resid, what="sum of the components (the final stream)")


@exercise(ref.count_stream_vectors)
def check_count_stream_vectors(check, count_stream_vectors):
    cases = [
        (GPT2_SMALL, 1, True, True),
        (GPT2_SMALL, 1024, True, True),
        (ref.LLAMA3_8B, 1, False, False),
        (ref.LLAMA3_8B, 8192, False, False),
        (ODD, 7, True, False),  # heads narrower than d_model / n_heads, d_mlp not 4 · d_model
    ]
    for cfg, n_ctx, pos, biases in cases:
        name = {GPT2_SMALL: "GPT-2 small", ref.LLAMA3_8B: "Llama-3-8B-sized"}.get(
            cfg, "ODD (3 heads of 4 in d_model 20, d_mlp 28)"
        )
        with check.case(f"{name}, {plural(n_ctx, 'position')}, pos_embed={pos}, biases={biases}"):
            want = ref.count_stream_vectors(cfg, n_ctx, pos_embed=pos, biases=biases)
            got = check.call(
                lambda cfg=cfg, n=n_ctx, pos=pos, biases=biases: count_stream_vectors(
                    cfg, n, pos_embed=pos, biases=biases
                ),
                what="count_stream_vectors",
            )
            if not isinstance(got, dict):
                check.fail(f"return a dict of counts, not {kind_of(got)}.")
            hints = {
                "messages": " One message per head per layer at each position: "
                "n_layers · n_heads (query heads), times the positions.",
                "memories": " One memory per neuron per layer at each position: "
                "n_layers · d_mlp, times the positions.",
                "embeddings": " The token's embedding, and the position's where it is learned.",
                "biases": " b_O and b_out, once per layer, at every position.",
            }
            for part, hint in hints.items():
                check.equal(got.get(part), want[part], what=f"count of {part}", hint=hint)


@exercise(ref.logit_lens)
def check_logit_lens(check, logit_lens):
    for model, tokens in _cases(check, seed=60):
        logits, cache = ref.run_with_cache(model, tokens)
        want = ref.logit_lens(cache, model)
        n = len(model.blocks)
        streams = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(n)]
        streams.append(cache[f"blocks.{n - 1}.hook_resid_post"])
        frozen = cache["ln_final.hook_scale"]
        ln, unembed = model.ln_final, model.unembed
        centred = [s - s.mean(-1, keepdim=True) for s in streams]
        mistakes = {
            "left out ln_final: the unembedding reads ln_final(stream), at every layer too": (
                torch.stack([unembed(s) for s in streams])
            ),
            "reused the final run's ln_final scale: each point of the stream has its own "
            "scale, so apply the whole ln_final to it": torch.stack(
                [unembed(c / frozen * ln.w + ln.b) for c in centred]
            ),
        }
        post = [cache[f"blocks.{i}.hook_resid_post"] for i in range(n)]
        shapes = [
            ((n, *logits.shape), "left out the stream before block 0 (the embeddings alone), "
             "or the one after the last block"),
        ]  # fmt: skip
        mistakes["used each block's resid_post and left out the embeddings alone"] = torch.stack(
            [unembed(ln(s)) for s in post]
        )
        mistakes["left out b_U: the logits are ln_final(stream) @ W_U + b_U"] = torch.stack(
            [ln(s) @ unembed.W_U for s in streams]
        )
        got = _call_on_cache(check, logit_lens, cache, model, what="logit_lens")
        check.tensor(got, want, what="logits of the lens", mistakes=mistakes, shapes=shapes)
        check.tensor(got[-1], logits, what="last layer of the lens (the model's own logits)")


@exercise(ref.direct_logit_attribution)
def check_direct_logit_attribution(check, direct_logit_attribution):
    for i, (model, tokens) in enumerate(_cases(check, seed=70)):
        logits, cache = ref.run_with_cache(model, tokens)
        correct, wrong = 3 + i, 11 + 2 * i
        want, labels = ref.direct_logit_attribution(cache, model, correct, wrong)
        parts, _ = ref.decompose_resid(cache, model)
        ln, W_U = model.ln_final, model.unembed.W_U
        direction = W_U[:, correct] - W_U[:, wrong]
        scale = cache["ln_final.hook_scale"]
        centred = parts - parts.mean(-1, keepdim=True)
        bias = want[-1:]
        # A scale recomputed from each part alone, as if it were the whole stream.
        own = (centred.pow(2).mean(-1, keepdim=True) + model.cfg.layer_norm_eps).sqrt()
        mistakes = {
            "did not centre the parts: ln_final subtracts each position's mean, a linear "
            "step, so subtract each part's mean": torch.cat(
                [(parts / scale * ln.w) @ direction, bias]
            ),
            "did not divide by ln_final's scale (frozen from the run: cache['ln_final."
            "hook_scale'])": torch.cat([(centred * ln.w) @ direction, bias]),
            "left out ln_final's w": torch.cat([(centred / scale) @ direction, bias]),
            "gave each part its own LayerNorm scale: freeze the run's, the whole stream's": (
                torch.cat([(centred / own * ln.w) @ direction, bias])
            ),
            "took logit[wrong] - logit[correct]: the direction is W_U[:, correct] - "
            "W_U[:, wrong]": -want,
            "left ln_final's b out of the bias component: it is ln_final.b · (W_U[:, correct] "
            "- W_U[:, wrong]) + b_U[correct] - b_U[wrong]": torch.cat(
                [want[:-1], bias - ln.b @ direction]
            ),
            "left b_U out of the bias component: add b_U[correct] - b_U[wrong]": torch.cat(
                [want[:-1], bias - (model.unembed.b_U[correct] - model.unembed.b_U[wrong])]
            ),
        }
        got = _call_on_cache(
            check,
            direct_logit_attribution,
            cache,
            model,
            correct,
            wrong,
            what="direct_logit_attribution",
        )
        shares, got_labels = check.pair(got, "(attributions, labels)")
        check.equal(
            list(got_labels) if isinstance(got_labels, tuple | list) else got_labels,
            labels,
            what="labels",
            hint=" decompose_resid's labels, then 'bias' for ln_final's b and b_U.",
        )
        check.tensor(shares, want, what="attributions", mistakes=mistakes)
        diff = logits[..., correct] - logits[..., wrong]
        check.tensor(shares.sum(0), diff, what="sum of the attributions (the logit difference)")
