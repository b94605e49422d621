"""Chapter 5's checkers of a run's activations: recording them under TransformerLens's names
(in attention, then in the whole model), and the cache of a run with patches. A wrong
recorded activation is compared with every other one of the run and named after the one it
equals; each activation in turn is changed by a hook, and the run must go on with the change.
The cache of a patched run must be that run's (the patch at a patched name, its effects
downstream), every patch applied, the patch values untouched, and a patch of a name the run
never reaches, or of the wrong shape, refused with an error that says which."""

import torch

from checks._core import CheckFailed, _close, exercise, kind_of, seeded
from checks.residual._common import NUDGED, _cases, _models
from solutions import residual as ref


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
        mistakes["recorded it before w and b: the course's hook_normalized is after them, "
                 "the LayerNorm's output (as HookedTransformer's was with fold_ln=False)"] = (
            x_hat
        )  # fmt: skip
        mistakes["recorded it before dividing by the scale"] = x_hat * scale
        for other, why in _other_layer_norms(ln, model):
            mistakes[why] = x_hat * other.w + other.b
    if name.endswith("hook_scale"):
        mistakes["recorded the variance, not its square root (with eps)"] = x.pow(2)
        mistakes["recorded 1 / scale: TransformerLens records sqrt(var + eps), the divisor"] = 1 / x
    if name.endswith("attn.hook_q") or name.endswith("attn.hook_k") or name.endswith("hook_z"):
        mistakes["recorded it [batch, n_heads, posn, d_head]: TransformerLens's is "
                 "[batch, posn, n_heads, d_head]"] = x.transpose(1, 2)  # fmt: skip
    return mistakes


def _other_layer_norms(ln: str, model) -> list[tuple]:
    """The LayerNorms a learner may pass in place of `ln`, each with what that mistake is."""
    if ln == "ln_final":
        last = f"blocks.{len(model.blocks) - 1}"
        return [
            (_module(model, f"{last}.{n}"), f"normalised the final stream with the last "
             f"block's {n}: the unembedding reads it through the model's own ln_final")
            for n in ("ln1", "ln2") if hasattr(_module(model, last), n)
        ]  # fmt: skip
    block, own = ln.rsplit(".", 1)
    other = {"ln1": "ln2", "ln2": "ln1"}[own]
    reader = {"ln1": "attention", "ln2": "the MLP"}[own]
    if getattr(_module(model, block), other, None) is None:
        return []
    return [
        (_module(model, f"{block}.{other}"), f"normalised with {other}'s w and b where {reader} "
         f"reads: each layer reads the stream through its own LayerNorm ({own} for {reader})")
    ]  # fmt: skip


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
        # The name is the prefix of every hook: a bare one, then TransformerLens's full names
        # of the layers, the last one included, so that a prefix written in shows.
        layer = [0, 2, 1, 1][i] % len(model.blocks)
        name = f"blocks.{layer}.attn" if i else "attn"
        attn = model.blocks[layer].attn
        x = torch.randn(*tokens.shape, model.cfg.d_model, generator=seeded(7))
        expected, got = {}, {}
        want = ref.attention_with_hooks(attn, x, name, _recorder(expected))
        out = check.call(attention_with_hooks, attn, x, name, _recorder(got))
        compare_caches(check, got, expected, model)
        check.tensor(out, want, what="attention output (attn_out)")
        check.tensor(out, attn(x), what="attention output, against the model's own attn")
        if i in NUDGED:
            _check_nudges(
                check,
                lambda hook, attn=attn, x=x, n=name: attention_with_hooks(attn, x, n, hook),
                lambda hook, attn=attn, x=x, n=name: ref.attention_with_hooks(attn, x, n, hook),
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


# --- run_with_cache: the cache of a patched run -----------------------------------------------


def _patch_cases(model, tokens) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """(what, patches): none; one at the first activation, one inside attention, one at the
    last (each the other prompt's, so that the first and last give its logits); several, the
    same activation in two blocks, in the dict out of the run's order."""
    _, other = ref.run_with_cache(model, (tokens * 7 + 3) % model.cfg.d_vocab)
    last = len(model.blocks) - 1
    inside = f"blocks.{min(1, last)}.attn.hook_pattern"
    several = [f"blocks.{last}.attn.hook_z", "blocks.0.attn.hook_z", "ln_final.hook_scale"]
    return [
        ("no patches", {}),
        ("a patch of hook_embed", {"hook_embed": other["hook_embed"]}),
        (f"a patch of {inside}", {inside: other[inside]}),
        ("a patch of ln_final.hook_normalized, the last activation",
         {"ln_final.hook_normalized": other["ln_final.hook_normalized"]}),
        (f"patches of {', '.join(several)}", {n: other[n] * 1.5 for n in several}),
    ]  # fmt: skip


def _unpatched(model, tokens, patches: dict) -> dict[str, torch.Tensor]:
    """What the patched run computes at each patched name, before the patch replaces it."""
    before = {}

    def hook(name, x):
        if name in patches:
            before[name] = x
            return patches[name]
        return x

    ref.run_with_hooks(model, tokens, hook)
    return before


def _holds(cache, name: str, want: torch.Tensor) -> bool:
    have = cache.get(name) if isinstance(cache, dict) else None
    return (
        isinstance(have, torch.Tensor)
        and have.shape == want.shape
        and _close(_finite(have), _finite(want), 1e-4, 1e-5)
    )


def _holds_all(cache, expected: dict[str, torch.Tensor]) -> bool:
    return all(_holds(cache, name, value) for name, value in expected.items())


def _call_with_patches(check, run_with_cache, model, tokens, patches: dict):
    """The learner's (logits, cache), handed a copy of `patches`; a patch value changed in
    place, or a patch taken out of the dict, fails the case."""
    given = {name: value.clone() for name, value in patches.items()}
    out = check.call(run_with_cache, model, tokens, given)
    for name, value in patches.items():
        if name not in given:
            check.fail(
                f"your run_with_cache took {name} out of the caller's `patches` dict: leave "
                "it as it is (work on a copy, `dict(patches)`), as the caller may use it again."
            )
        if not torch.equal(given[name], value):
            check.fail(
                f"your run_with_cache changed the patch value of {name} in place: the "
                "caller's tensor must stay as it was (patch_sweep, for one, reuses it). "
                "`value.copy_(x)`, or `x += ...` once x is the patch, writes into it: compute "
                "new tensors (`x = x + ...`)."
            )
    return check.pair(out, "(logits, cache)")


def _check_patched(check, logits, cache, model, tokens, patches: dict, clean_run) -> None:
    """`clean_run`: the reference's (logits, cache) of the run without patches."""
    want, expected = ref.run_with_cache(model, tokens, patches)
    clean_logits, clean = clean_run
    if _holds_all(cache, expected):
        clean_mistake = ("returned the clean run's logits, though your cache is the patched "
                         "run's: return the logits of the run you patched")  # fmt: skip
    else:
        clean_mistake = ("ignored the patches: these are the clean run's logits. The run goes "
                         "on with what the hook returns: at a patched name, the patch")  # fmt: skip
    mistakes = {clean_mistake: clean_logits}
    for name, value in patches.items() if len(patches) > 1 else []:
        alone = ref.run_with_cache(model, tokens, {name: value})[0]
        mistakes[f"applied only the patch of {name}, of {len(patches)}: replace every "
                 "activation `patches` names, wherever the run reaches it"] = alone  # fmt: skip
    if patches:
        added = ref.run_with_hooks(
            model, tokens, lambda n, x: x + patches[n] if n in patches else x
        )
        mistakes["added the patch to the activation: a patch replaces it"] = added
    check.tensor(logits, want, what="logits", mistakes=mistakes)
    for name, value in expected.items():
        if name in patches or _holds(cache, name, value):
            continue
        if _holds(cache, name, clean[name]):
            check.fail(
                f"cache[{name!r}] is the clean run's, not the patched run's: the patch changes "
                "everything downstream of it, and the cache should record the run the patches "
                "made (one run, recorded as it goes)."
            )
    for name, before in _unpatched(model, tokens, patches).items():
        if _holds(cache, name, before) and not _holds(cache, name, patches[name]):
            check.fail(
                f"cache[{name!r}] holds what the run computed there before the patch: record "
                "after replacing, so that the cache holds what the run went on with. A cache "
                "with the clean value at a patched name lies about the run."
            )
    compare_caches(check, cache, expected, model)


def _names_shape(message: str, shape) -> bool:
    dims = ",".join(str(d) for d in shape)
    return f"({dims})" in message.replace(" ", "") or f"[{dims}]" in message.replace(" ", "")


def _check_raises(check, run_with_cache, model, tokens, patches, error: type, names, why: str):
    """The learner's run_with_cache must raise `error` with each of `names` in its message."""
    given = {name: value.clone() for name, value in patches.items()}
    try:
        check.call(run_with_cache, model, tokens, given)
    except CheckFailed as failure:
        raised = failure.diagnosis
        if f"raised {error.__name__}:" not in raised:
            check.fail(f"{raised}\nExpected a {error.__name__}: {why}")
        missing = [n for n in names if not (n in raised if isinstance(n, str) else
                                            _names_shape(raised, n))]  # fmt: skip
        if missing:
            check.fail(
                f"{raised}\nThe message should name {', '.join(map(str, missing))}: whoever "
                f"reads it needs to see what to fix. ({why})"
            )
        return
    check.fail(f"your run_with_cache returned without an error: {why}")


@exercise(ref.run_with_cache)
def check_run_with_cache(check, run_with_cache):
    for label, model, tokens in _models(seed=20):
        clean_run = ref.run_with_cache(model, tokens)
        for what, patches in _patch_cases(model, tokens):
            with check.case(f"{label}: {what}"):
                if patches:
                    got = _call_with_patches(check, run_with_cache, model, tokens, patches)
                    _check_patched(check, *got, model, tokens, patches, clean_run)
                    continue
                out = check.call(run_with_cache, model, tokens)  # patches left out: None
                logits, cache = check.pair(out, "(logits, cache)")
                _check_patched(check, logits, cache, model, tokens, {}, clean_run)
                if getattr(model.blocks[0], "mlp", None) is not None:
                    check.tensor(logits, model(tokens), what="logits, against model(tokens)")
        clean = clean_run[1]
        resid = clean["blocks.0.hook_resid_pre"]
        typo, beyond = "blocks.0.resid_pre", f"blocks.{len(model.blocks)}.hook_resid_pre"
        with check.case(f"{label}: a patch named {typo} (TransformerLens's is hook_resid_pre)"):
            _check_raises(
                check, run_with_cache, model, tokens, {typo: resid}, KeyError, [typo],
                f"no activation is named {typo}, so the run is the clean one, and a conclusion "
                "drawn from it is wrong. After the run, raise a KeyError that names every "
                "patch the run never reached.",
            )  # fmt: skip
        british = "ln_final.hook_normalised"
        with check.case(f"{label}: patches of hook_embed, {beyond} and {british}"):
            _check_raises(
                check, run_with_cache, model, tokens,
                {"hook_embed": clean["hook_embed"], beyond: resid,
                 british: clean["ln_final.hook_normalized"]},
                KeyError, [beyond, british],
                f"the model has {len(model.blocks)} blocks, so {beyond} is never reached, and "
                f"TransformerLens spells it hook_normalized: name every patch the run did not "
                "reach, not only the first.",
            )  # fmt: skip
        name = "hook_embed" if len(model.blocks) == 2 else "blocks.0.attn.hook_pattern"
        value = clean[name][0] if name == "hook_embed" else clean[name][:, :1]
        with check.case(f"{label}: a patch of {name} of shape {tuple(value.shape)}"):
            _check_raises(
                check, run_with_cache, model, tokens, {name: value}, ValueError,
                [name, tuple(value.shape), tuple(clean[name].shape)],
                f"the run's {name} has shape {tuple(clean[name].shape)}. A value that only "
                "broadcasts to it is not an activation of the run: raise a ValueError that "
                "names the activation and both shapes.",
            )  # fmt: skip
