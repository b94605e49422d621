"""What chapter 5's checkers share: the cases (random models of two configs, with and without
MLPs, and their tokens), the model builder the tests use too, and the call of learner code
that reads a cache, which must leave it unchanged."""

import torch

from checks._configs import UNEVEN_HEADS
from checks._core import plural, randomize, seeded
from solutions.config import TINY, Config
from solutions.transformer import Transformer

SCALE = 0.3  # random weights this size keep the softmax and GELU away from saturation
# (config, attention-only, batch, positions). Attention-only blocks come both ways: with
# `mlp` set to None, and without an `mlp` at all (chapter 5b's AttnOnlyBlock).
CASES = [
    (TINY, False, 2, 6),
    (UNEVEN_HEADS, False, 3, 5),
    (UNEVEN_HEADS, True, 2, 4),
    (TINY, "no mlp", 1, 1),
]
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


def _models(seed: int):
    """Each case's label, model and tokens."""
    for i, (cfg, attn_only, batch, posn) in enumerate(CASES):
        label = "TINY" if cfg == TINY else "ODD"
        kind = {False: "with MLPs", True: "attention-only (mlp None)"}.get(
            attn_only, "attention-only (no mlp)"
        )
        model = random_model(cfg, attn_only, seed=seed + i)
        tokens = torch.randint(cfg.d_vocab, (batch, posn), generator=seeded(seed + 50 + i))
        yield f"{label} {kind}, batch {batch}, {plural(posn, 'position')}", model, tokens


def _cases(check, seed: int):
    """Each case's model and tokens, inside its named case."""
    for label, model, tokens in _models(seed):
        with check.case(label):
            yield model, tokens


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
