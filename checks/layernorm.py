"""Checkers for chapter 4 (solutions/layernorm.py).

Every check uses random w and b (a w of ones and a b of zeros hide a forgotten or swapped
parameter) and configs whose layer_norm_eps is not the default, on inputs whose variance is
near that eps, so that an eps written in by hand, or put outside the square root, shows.
"""

import torch
from torch import nn

from checks import _fold_diagnosis as fold
from checks._configs import SMALL_D_MODEL_LARGE_EPS, UNEVEN_HEADS
from checks._core import CheckFailed, exercise, kind_of, plural, randomize, scaled, seeded
from solutions import layernorm as ref
from solutions.config import TINY
from solutions.transformer import Transformer

__all__ = [
    "check_layer_norm",
    "check_layer_norm_jacobian",
    "check_fold_layer_norm",
    "check_fold_transformer",
    "check_rms_norm",
]

# (config, batch, positions, input scale). EPS's eps is 1e-2, and inputs ×0.1 have a
# variance of 1e-2: there eps counts as much as the variance does.
EPS = TINY.but(layer_norm_eps=1e-2)
CASES = [
    (TINY, 2, 5, 1.0),
    (SMALL_D_MODEL_LARGE_EPS, 3, 4, 1.0),
    (EPS, 2, 6, 0.1),
    (SMALL_D_MODEL_LARGE_EPS, 1, 1, 0.03),
    (TINY, 1, 7, 100.0),
]


def _describe(cfg, batch, posn, scale) -> str:
    return (
        f"d_model {cfg.d_model}, eps {cfg.layer_norm_eps:g}, batch {batch}, "
        f"{plural(posn, 'position')}" + scaled("inputs", scale)
    )


def _inputs(cfg, batch, posn, scale, seed):
    gen = seeded(seed)
    # An offset per position, so that forgetting to subtract the mean shows.
    x = torch.randn(batch, posn, cfg.d_model, generator=gen) * scale
    return x + torch.randn(batch, posn, 1, generator=gen) * scale


def _norm(x, w, b, eps, *, var="biased", eps_in=True, centre=True, dim=-1):
    """A LayerNorm with one thing done differently, as a learner might."""
    c = x - x.mean(dim=dim, keepdim=True) if centre else x
    v = x.var(dim=dim, keepdim=True, unbiased=var == "unbiased")
    if not centre:
        v = x.pow(2).mean(dim=dim, keepdim=True)
    scale = (v + eps).sqrt() if eps_in else v.sqrt() + eps
    return c / scale * w + b


def layer_norm_mistakes(x, w, b, eps) -> dict[str, torch.Tensor]:
    mistakes = {
        "used the unbiased variance (divided by d_model - 1): GPT-2's LayerNorm divides by "
        "d_model (`unbiased=False`, or `correction=0`)": _norm(x, w, b, eps, var="unbiased"),
        "added eps outside the square root: it is sqrt(var + eps), not sqrt(var) + eps": _norm(
            x, w, b, eps, eps_in=False
        ),
        "did not subtract the mean before scaling": _norm(x, w, b, eps, centre=False),
        "forgot the bias b": _norm(x, w, 0, eps),
        "swapped w and b: the normalised x is multiplied by w, then b is added": _norm(
            x, b, w, eps
        ),
        "did not use the config's eps: read it from `self.cfg.layer_norm_eps` "
        f"(here {eps:g}), do not write a number in": _norm(x, w, b, 1e-5),
        "left out eps (or used one other than the config's): add `self.cfg.layer_norm_eps` "
        "under the square root": _norm(x, w, b, 0.0),
        "divided by the variance, not by its square root": (
            (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=False) + eps) * w + b
        ),
    }
    if x.shape[-2] > 1:
        mistakes["normalised over the positions: the mean and variance are over d_model, "
                 "the last axis"] = _norm(x, w, b, eps, dim=-2)  # fmt: skip
    if x.shape[0] > 1:
        mistakes["normalised over the batch: the mean and variance are over d_model, "
                 "the last axis"] = _norm(x, w, b, eps, dim=0)  # fmt: skip
    return mistakes


def _detached(reference, centre: bool):
    """The reference norm with its scale detached from the graph."""

    def forward(x):
        c = x - x.mean(dim=-1, keepdim=True) if centre else x
        scale = (c.pow(2).mean(dim=-1, keepdim=True) + reference.cfg.layer_norm_eps).sqrt()
        return c / scale.detach() * reference.w + (reference.b if centre else 0)

    return forward


def _check_gradients(check, norm, reference, x, detached, what: str) -> None:
    """The model trains through a norm: its output must pass gradients to the input and to
    each parameter, as the reference's does. `detached(x)` is the output with the scale
    detached, for the diagnosis."""
    x = x.clone().requires_grad_()
    out = check.call(norm, x, what=what)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        check.fail(
            f"your {what} returns an output that carries no gradient: the model trains "
            "through it, so compute it without `torch.no_grad()` or `.detach()`."
        )
    r = torch.randn(out.shape, generator=seeded(5))
    names = [name for name, _ in reference.named_parameters()]
    theirs = dict(norm.named_parameters())
    got = torch.autograd.grad((out * r).sum(), [x, *theirs.values()], allow_unused=True)
    want = torch.autograd.grad((reference(x) * r).sum(), [x, *reference.parameters()])
    wrong = torch.autograd.grad((detached(x) * r).sum(), x)[0]
    for name, g, w in zip(["the input", *names], got, want, strict=True):
        if g is None:
            check.fail(
                f"no gradient reaches {name}: use `self.{name}` itself in forward, not "
                f"`self.{name}.data` or `self.{name}.detach()`, or it will never train."
            )
        mistakes = {}
        if name == "the input":
            mistakes["detached the scale: gradients flow through it too, so compute it "
                     "from x without `.detach()`"] = wrong  # fmt: skip
        check.tensor(g, w, what=f"gradient with respect to {name}", mistakes=mistakes)


@exercise(ref.LayerNorm)
def check_layer_norm(check, LayerNorm):
    cases = [*CASES, (EPS, 2, 3, 0.0)]
    for i, (cfg, batch, posn, scale) in enumerate(cases):
        label = _describe(cfg, batch, posn, scale) if scale else "a constant stream: x̂ = 0"
        with check.case(label):
            reference = randomize(ref.LayerNorm(cfg), seed=i)
            ln = check.build(LayerNorm, cfg)
            check.load_weights(ln, reference)
            x = _inputs(cfg, batch, posn, scale, seed=10 + i)
            if not scale:
                x = torch.full((batch, posn, cfg.d_model), 3.0)
            expected = reference(x)
            got = check.call(ln, x, what="LayerNorm.forward")
            w, b, eps = reference.w.detach(), reference.b.detach(), cfg.layer_norm_eps
            check.tensor(got, expected, what="output", mistakes=layer_norm_mistakes(x, w, b, eps))
            if i == 0:
                _check_gradients(check, ln, reference, x, _detached(reference, True), "LayerNorm")


def _jacobian_with_eps(w, x, eps):
    """The Jacobian computed with another eps than the config's."""
    d, sigma = x.shape[-1], (x.var(unbiased=False) + eps).sqrt()
    x_hat = (x - x.mean()) / sigma
    return w[:, None] * (torch.eye(d) - 1 / d - torch.outer(x_hat, x_hat) / d) / sigma


@exercise(ref.layer_norm_jacobian)
def check_layer_norm_jacobian(check, layer_norm_jacobian):
    for i, (cfg, scale) in enumerate(
        [(TINY, 1.0), (SMALL_D_MODEL_LARGE_EPS, 1.0), (EPS, 0.1), (TINY, 30.0)]
    ):
        with check.case(
            f"d_model {cfg.d_model}, eps {cfg.layer_norm_eps:g}" + scaled("input", scale)
        ):
            ln = randomize(ref.LayerNorm(cfg), seed=20 + i)
            x = _inputs(cfg, 1, 1, scale, seed=30 + i)[0, 0]
            with torch.no_grad():
                expected = ref.layer_norm_jacobian(ln, x)
            d, w = cfg.d_model, ln.w.detach()
            sigma = (x.var(unbiased=False) + cfg.layer_norm_eps).sqrt()
            x_hat = (x - x.mean()) / sigma
            eye, ones = torch.eye(d), torch.ones(d, d) / d
            outer = torch.outer(x_hat, x_hat) / d
            with torch.no_grad():
                ln_x = ln(x[None, None])[0, 0]
            mistakes = {
                "put w on the wrong side: row i (output i) is scaled by w_i, so "
                "w[:, None] * ..., not ... * w": expected * w[None, :] / w[:, None],
                "left out w": expected / w[:, None],
                "left out the x̂x̂ᵀ/d term (σ depends on x too)": w[:, None] * (eye - ones) / sigma,
                "left out the 11ᵀ/d term (the mean depends on x too)": w[:, None]
                * (eye - outer)
                / sigma,
                "forgot to divide by σ": expected * sigma,
                "took x̂ from ln(x), after w and b: x̂ = (x - mean) / σ, before them": w[:, None]
                * (eye - ones - torch.outer(ln_x, ln_x) / d)
                / sigma,
                "left eps out of σ: σ = sqrt(var + eps), with the config's eps": _jacobian_with_eps(
                    w, x, 0.0
                ),
                "did not use the config's eps: σ = sqrt(var + ln.cfg.layer_norm_eps)": (
                    _jacobian_with_eps(w, x, 1e-5)
                ),
            }
            got = check.call(layer_norm_jacobian, ln, x)
            check.tensor(got, expected, what="Jacobian", mistakes=mistakes)
            if i == 0:
                autograd = torch.autograd.functional.jacobian(
                    lambda v, ln=ln: ln(v[None, None])[0, 0], x
                )
                check.tensor(got, autograd, what="Jacobian (against autograd's)")


@exercise(ref.fold_layer_norm)
def check_fold_layer_norm(check, fold_layer_norm):
    for i, (cfg, n) in enumerate(
        [(TINY, 30), (SMALL_D_MODEL_LARGE_EPS, 7), (TINY, 1), (SMALL_D_MODEL_LARGE_EPS, 5)]
    ):
        with check.case(f"d_model {cfg.d_model}, W [{cfg.d_model}, {n}]"):
            ln = randomize(ref.LayerNorm(cfg), seed=40 + i)
            gen = seeded(50 + i)
            W, bias = torch.randn(cfg.d_model, n, generator=gen), torch.randn(n, generator=gen)
            with torch.no_grad():
                W_ref, b_ref = ref.fold_layer_norm(ln, W, bias)
                w, b = ln.w, ln.b
                got = check.call(fold_layer_norm, ln, W, bias)
            got = check.pair(got, "(W_folded, b_folded)")
            columns = {}
            if n == cfg.d_model:
                columns["scaled W's columns: w scales W's rows, one per d_model"] = W * w
            check.tensor(
                got[0],
                W_ref,
                what="folded W",
                mistakes=columns | {"left W as it was: w must move into it": W},
            )
            check.tensor(
                got[1],
                b_ref,
                what="folded b",
                mistakes={
                    "forgot the layer's own bias: b' = b W + bias": b @ W,
                    "passed b through the folded W: b' = b W + bias, with the original W": (
                        (b * w) @ W + bias
                    ),
                    "left the bias as it was: b must pass through W into it": bias,
                },
            )


# (config, weight scale): every parameter random, LayerNorm w and b and all biases included;
# UNEVEN_HEADS has n_heads · d_head ≠ d_model and three layers.
FOLD_CASES = [(TINY, 0.3), (UNEVEN_HEADS, 0.3), (TINY, 1.0)]
SIZES = (
    "\nw has d_model numbers, one per row of each reader's weight: attention's W_Q is "
    "[n_heads, d_model, d_head], the MLP's W_in [d_model, d_mlp], the unembedding's W_U "
    "[d_model, d_vocab]."
)


def _fold(check, fold_transformer, model):
    """The learner's folded model; the model they were given must come back unchanged."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    try:
        got = check.call(fold_transformer, model)
    except CheckFailed as failure:
        if "must match the size" not in failure.diagnosis:
            raise
        check.fail(failure.diagnosis + SIZES)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    if changed:
        check.fail(
            f"your fold_transformer changed the model it was given ({changed[0]}"
            f"{' and more' if len(changed) > 1 else ''}): fold a copy (copy.deepcopy(model)) "
            "and return it, leaving the original as it was."
        )
    if got is None:
        check.fail("your fold_transformer returned None: did you forget `return`?")
    if not isinstance(got, nn.Module):
        check.fail(f"return the folded model (an nn.Module), not {kind_of(got)}.")
    if got is model:
        check.fail("your fold_transformer returned the model it was given, unfolded.")
    theirs = {name: p.detach() for name, p in got.named_parameters()}
    missing, extra = sorted(set(before) - set(theirs)), sorted(set(theirs) - set(before))
    if missing or extra:
        replaced = fold.replaced_norm(model, got)
        check.fail(
            f"the folded model has no {missing[0]}: it looks like you {replaced}"
            if replaced and missing
            else f"the folded model's parameters differ from the model's. Missing: "
            f"{missing[:3] or 'none'}; unexpected: {extra[:3] or 'none'}."
        )
    return got, before, theirs


@exercise(ref.fold_transformer)
def check_fold_transformer(check, fold_transformer):
    for i, (cfg, scale) in enumerate(FOLD_CASES):
        label = f"{cfg.n_layers} layers, {cfg.n_heads} heads of {cfg.d_head}, d_model {cfg.d_model}"
        with check.case(label + scaled("weights", scale)):
            model = randomize(Transformer(cfg), seed=80 + i, scale=scale)
            tokens = torch.randint(cfg.d_vocab, (2, cfg.n_ctx // 2), generator=seeded(90 + i))
            with torch.no_grad():
                expected, by_reference = model(tokens), ref.fold_transformer(model)(tokens)
            got, original, theirs = _fold(check, fold_transformer, model)
            lns = {
                name: (original[f"{name}.w"], original[f"{name}.b"])
                for name, _ in fold.readers(cfg.n_layers)
            }
            statuses = fold.reader_statuses(theirs, original, lns)
            for name, pairs in fold.readers(cfg.n_layers):
                w, b = theirs[f"{name}.w"], theirs[f"{name}.b"]
                if not (fold.is_constant(w, 1.0) and fold.is_constant(b, 0.0)):
                    check.fail(
                        f"the folded {name} has w ≠ 1 or b ≠ 0: it looks like you "
                        + fold.layer_norm_verdict(name, w, b, pairs, statuses)
                    )
            with torch.no_grad():
                logits = check.call(got, tokens, what="folded model")
            what = "folded model's logits (against the model's)"
            if isinstance(logits, torch.Tensor) and not fold.same(logits, expected):
                verdict = fold.replaced_norm(model, got)
                verdict = verdict or fold.logits_verdict(theirs, original, statuses)
                if verdict and torch.isfinite(logits).all():
                    check.fail(
                        "the folded model's logits differ from the model's: it looks like you "
                        + verdict
                    )
            check.tensor(logits, expected, what=what)
            check.tensor(
                logits, by_reference, what="folded model's logits (against the reference fold's)"
            )


@exercise(ref.RMSNorm)
def check_rms_norm(check, RMSNorm):
    for i, (cfg, batch, posn, scale) in enumerate(CASES):
        with check.case(_describe(cfg, batch, posn, scale)):
            reference = randomize(ref.RMSNorm(cfg), seed=60 + i)
            norm = check.build(RMSNorm, cfg)
            check.load_weights(norm, reference)
            x = _inputs(cfg, batch, posn, scale, seed=70 + i)
            w, eps = reference.w.detach(), cfg.layer_norm_eps
            ms = x.pow(2).mean(-1, keepdim=True)
            mistakes = {
                "subtracted the mean: RMSNorm does not centre": _norm(x, w, 0, eps),
                "added eps outside the square root": x / ((ms + 0).sqrt() + eps) * w,
                "did not use the config's eps: read it from `self.cfg.layer_norm_eps`": x
                / (ms + 1e-5).sqrt()
                * w,
                "forgot w": x / (ms + eps).sqrt(),
                "divided by the mean square, not its square root": x / (ms + eps) * w,
            }
            got = check.call(norm, x, what="RMSNorm.forward")
            check.tensor(got, reference(x), what="output", mistakes=mistakes)
            if i == 0:
                _check_gradients(check, norm, reference, x, _detached(reference, False), "RMSNorm")
