"""Chapter 5's checker of activation patching over layers and positions (`patch_sweep`).

Random models (every parameter random), with and without MLPs, patched at several of the
stream's hook points. The corrupted prompt differs from the clean one at every position, so
that each position's patch moves the metric by its own amount and the usual slips give other
numbers, each named in the verdict: every position patched at once, the corrupted run patched
into the clean one, a cache changed in place (each patch keeps the ones before it), a layer off
by one, the metric of an unpatched run, an unnormalised or wrongly normalised sweep, a patch in
one row of the batch only, and a module hook left on the model.
"""

import torch

from checks._cases import plural, seeded
from checks._compare import _close
from checks._configs import UNEVEN_HEADS
from checks._core import exercise
from checks.residual._common import random_model
from solutions import residual as ref
from solutions.config import TINY

# (config, attention-only, batch, positions, hook). hook_resid_post and hook_resid_pre of the
# next layer hold the same tensor: a sweep with its layers off by one gives the other's rows.
CASES = [
    (TINY, False, 2, 5, "hook_resid_pre"),
    (UNEVEN_HEADS, False, 3, 4, "hook_attn_out"),
    (UNEVEN_HEADS, False, 1, 3, "hook_mlp_out"),
    (UNEVEN_HEADS, True, 2, 4, "hook_resid_post"),
    (TINY, False, 1, 1, "hook_resid_pre"),
]


def _metric(a: int, b: int):
    """A logit difference at the last position, averaged over the batch."""

    def logit_difference(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, -1, a] - logits[:, -1, b]).mean()

    return logit_difference


def _sweep(model, clean, corrupted, metric, hook, *, way="one", swap=False) -> torch.Tensor:
    """The raw metric of each patched run, patched the right way or one of the wrong ones:
    way "one" (a position at a time), "all" (every position at once), "cumulative" (each
    patch kept in the cache for the next), "row 0" (the first row of the batch only); swap:
    the corrupted activation into the clean run."""
    source, target = (corrupted, clean) if swap else (clean, corrupted)
    _, source_cache = ref.run_with_cache(model, source)
    _, target_cache = ref.run_with_cache(model, target)
    sweep = torch.zeros(len(model.blocks), clean.shape[1])
    for layer in range(len(model.blocks)):
        name = f"blocks.{layer}.{hook}"
        value = target_cache[name].clone()
        for pos in range(clean.shape[1]):
            if way != "cumulative":
                value = target_cache[name].clone()
            if way == "all":
                value = source_cache[name]
            elif way == "row 0":
                value[0, pos] = source_cache[name][0, pos]
            else:
                value[:, pos] = source_cache[name][:, pos]
            sweep[layer, pos] = float(metric(ref.run_with_patch(model, target, name, value)))
    return sweep


def _check_layers(check, got, want, hook: str) -> None:
    """A sweep whose rows are the reference's of the layer after, or before, each one."""
    if not isinstance(got, torch.Tensor) or got.shape != want.shape or len(want) < 2:
        return
    if not got.is_floating_point() or not torch.isfinite(got).all():
        return
    got, rows = got.float(), want
    if _close(rows[1:], rows[:-1], 1e-4, 1e-5):
        return
    for shift, which in [(1, "after"), (-1, "before")]:
        mine, theirs = (got[:-1], rows[1:]) if shift == 1 else (got[1:], rows[:-1])
        if _close(mine, theirs, 1e-4, 1e-5) and not _close(got, rows, 1e-4, 1e-5):
            check.fail(
                f"each row of your sweep holds what patching the layer {which} gives: the "
                f"layers are off by one. Row `layer` patches blocks.{{layer}}.{hook}, for "
                "layer in range(n_layers). (hook_resid_post of a layer is hook_resid_pre of "
                "the next; a forward pre-hook on blocks[layer] sees its hook_resid_pre, a "
                "forward hook its hook_resid_post.)"
            )


def _comparable(got, want) -> bool:
    return (
        isinstance(got, torch.Tensor)
        and got.shape == want.shape
        and got.is_floating_point()
        and bool(torch.isfinite(got).all())
    )


def _mistakes(model, clean, corrupted, metric, hook, want) -> dict[str, torch.Tensor]:
    """What each usual slip gives, normalised as the sweep is (where the slip keeps that)."""
    low, high = (
        float(metric(ref.run_with_hooks(model, corrupted, lambda n, x: x))),
        float(metric(ref.run_with_hooks(model, clean, lambda n, x: x))),
    )

    def norm(way="one", swap=False):
        raw = _sweep(model, clean, corrupted, metric, hook, way=way, swap=swap)
        return (raw - low) / (high - low)

    all_at_once = norm("all")
    ones = torch.ones_like(want)
    every = (
        "patched every position at once: patch one (layer, position) per run, the rest of the "
        "activation the corrupted run's own"
    )
    mistakes = {
        # The whole stream patched is the clean run from there on: every cell 1.
        "scored the clean run in every cell, or " + every: ones,
        every: all_at_once,
        "patched the corrupted run's activation into the clean run: run the corrupted tokens, "
        "and put the clean activation in": norm(swap=True),
        "wrote each patch into the cache itself, so that every later patch keeps the earlier "
        "ones: copy the activation (`.clone()`) before writing a position into it": norm(
            "cumulative"
        ),
        "returned the metric unnormalised: (patched - corrupted) / (clean - corrupted), with "
        "the metrics of the clean and the corrupted runs": want * (high - low) + low,
        "normalised the other way round: 0 is the corrupted run's metric, 1 the clean run's": 1
        - want,
        "scored the corrupted run without the patch (or the patch never took effect): score "
        "the logits of the patched run, and run on with what the hook returns": torch.zeros_like(
            want
        ),
    }
    if clean.shape[0] > 1:
        mistakes["patched the first row of the batch only: patch `[:, pos]`, every row"] = norm(
            "row 0"
        )
    return mistakes


@exercise(ref.patch_sweep)
def check_patch_sweep(check, patch_sweep):
    for i, (cfg, attn_only, batch, posn, hook) in enumerate(CASES):
        kind = "attention-only" if attn_only else "with MLPs"
        label = "TINY" if cfg == TINY else "ODD"
        with check.case(f"{label} {kind}, {hook}, batch {batch}, {plural(posn, 'position')}"):
            model = random_model(cfg, attn_only, seed=80 + i)
            clean = torch.randint(cfg.d_vocab, (batch, posn), generator=seeded(90 + i))
            shift = torch.randint(1, cfg.d_vocab, (batch, posn), generator=seeded(95 + i))
            corrupted = (clean + shift) % cfg.d_vocab  # another token at every position
            with torch.no_grad():
                clean_logits, _ = ref.run_with_cache(model, clean)
                corrupted_logits, _ = ref.run_with_cache(model, corrupted)
                # The two tokens the corruption moves furthest apart: a wide gap to divide by.
                moved = (clean_logits - corrupted_logits)[:, -1].mean(0)
                metric = _metric(int(moved.argmax()), int(moved.argmin()))
                want = ref.patch_sweep(model, clean, corrupted, metric, hook)
            before = ref.run_with_hooks(model, clean, lambda name, x: x)
            got = check.call(patch_sweep, model, clean, corrupted, metric, hook, what="patch_sweep")
            if not torch.equal(ref.run_with_hooks(model, clean, lambda name, x: x), before):
                check.fail(
                    "the model computes other logits after your patch_sweep: leave its weights "
                    "as they are, and patch the activations of a run."
                )
            if isinstance(got, torch.Tensor) and got.is_floating_point():
                got = got.float()  # a float64 sweep is as good
            mistakes = {}
            wrong = not _close(got, want, 1e-4, 1e-5) if _comparable(got, want) else False
            if wrong:  # the slips cost a sweep each: worked out only for a wrong answer
                _check_layers(check, got, want, hook)
                with torch.no_grad():
                    mistakes = _mistakes(model, clean, corrupted, metric, hook, want)
            shapes = [
                ((posn, len(model.blocks)), "returned [posn, n_layers]: rows are layers"),
                ((len(model.blocks) + 1, posn), "added a row: one per block, n_layers"),
            ]
            check.tensor(got, want, what="sweep", mistakes=mistakes, shapes=shapes)
