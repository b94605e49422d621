"""Chapter 5's activation patching: the reference sweep gives the answers known in advance, and
its checker accepts correct sweeps however they are written and rejects, by name, the slips
learners make (every position at once, the runs swapped, a cache changed in place, a layer off
by one, the wrong run scored, the wrong normalisation, one row of the batch, a hook left on)."""

import time

import torch

from checks import residual as checks
from checks.residual import random_model
from solutions import residual as ref
from solutions.config import TINY
from support import assert_accepts, assert_rejects


def logit_difference(logits):
    return (logits[:, -1, 3] - logits[:, -1, 7]).mean()


def _layer_name(hook: str, layer: int) -> str:
    return f"blocks.{layer}.{hook}"


def test_sweep_gives_the_known_answers():
    """The prompts differ at position 2 only: before block 0, patching that position restores
    the clean run, and any other position changes nothing; after the last block, only the last
    position feeds the metric."""
    model = random_model(TINY, False, seed=5)
    clean = torch.randint(TINY.d_vocab, (2, 6), generator=torch.Generator().manual_seed(1))
    corrupted = clean.clone()
    corrupted[:, 2] = (corrupted[:, 2] + 1) % TINY.d_vocab
    with torch.no_grad():
        pre = ref.patch_sweep(model, clean, corrupted, logit_difference, "hook_resid_pre")
        post = ref.patch_sweep(model, clean, corrupted, logit_difference, "hook_resid_post")
    torch.testing.assert_close(pre[0], torch.tensor([0.0, 0, 1, 0, 0, 0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(post[-1], torch.tensor([0.0, 0, 0, 0, 0, 1]), atol=1e-4, rtol=0)
    assert pre.shape == (TINY.n_layers, 6)


# --- Correct alternatives ------------------------------------------------------------------


def test_patch_sweep_checker_accepts_the_reference_quickly(capsys):
    start = time.perf_counter()
    assert_accepts(checks.check_patch_sweep, ref.patch_sweep, capsys)
    assert time.perf_counter() - start < 10  # about a second on a free core


def test_accepts_a_hook_that_patches_the_live_activation_in_float64(capsys):
    """No cache of the corrupted run: the hook writes the clean position into the activation
    the run computes (in place, which is its own tensor), and the sweep is float64."""

    def patch_sweep(model, clean, corrupted, metric, hook="hook_resid_pre"):
        _, clean_cache = ref.run_with_cache(model, clean)
        ends = [
            float(metric(ref.run_with_hooks(model, t, lambda n, x: x))) for t in (corrupted, clean)
        ]
        rows = []
        for layer in range(len(model.blocks)):
            name = _layer_name(hook, layer)
            row = []
            for pos in range(clean.shape[1]):

                def put_back(n, x, name=name, pos=pos):
                    if n == name:
                        x[:, pos] = clean_cache[name][:, pos]
                    return x

                row.append(float(metric(ref.run_with_hooks(model, corrupted, put_back))))
            rows.append(row)
        return (torch.tensor(rows, dtype=torch.float64) - ends[0]) / (ends[1] - ends[0])

    assert_accepts(checks.check_patch_sweep, patch_sweep, capsys)


def test_accepts_a_patch_built_with_torch_where(capsys):
    def patch_sweep(model, clean, corrupted, metric, hook="hook_resid_pre"):
        clean_logits, clean_cache = ref.run_with_cache(model, clean)
        corrupted_logits, corrupted_cache = ref.run_with_cache(model, corrupted)
        low, high = metric(corrupted_logits), metric(clean_logits)
        n_layers, posn = len(model.blocks), clean.shape[1]
        out = torch.empty(n_layers, posn)
        for layer in range(n_layers):
            name = _layer_name(hook, layer)
            for pos in range(posn):
                at = (torch.arange(posn) == pos)[None, :, None]
                value = torch.where(at, clean_cache[name], corrupted_cache[name])
                out[layer, pos] = (
                    metric(ref.run_with_patch(model, corrupted, name, value)) - low
                ) / (high - low)
        return out

    assert_accepts(checks.check_patch_sweep, patch_sweep, capsys)


# --- The slips -----------------------------------------------------------------------------


def _sweep_with(patch_position, *, into_clean=False, hook_name=_layer_name, scored=None):
    """A sweep as learners write it, with one step replaced: how a position is patched
    (value, clean activation, corrupted activation, pos -> new value), which run is patched,
    which name a layer's hook has, and what is scored."""

    def patch_sweep(model, clean, corrupted, metric, hook="hook_resid_pre"):
        clean_logits, clean_cache = ref.run_with_cache(model, clean)
        corrupted_logits, corrupted_cache = ref.run_with_cache(model, corrupted)
        low, high = float(metric(corrupted_logits)), float(metric(clean_logits))
        source, target, tokens = clean_cache, corrupted_cache, corrupted
        if into_clean:
            source, target, tokens = corrupted_cache, clean_cache, clean
        out = torch.zeros(len(model.blocks), clean.shape[1])
        for layer in range(len(model.blocks)):
            name = hook_name(hook, layer)
            for pos in range(clean.shape[1]):
                value = patch_position(target[name], source[name], pos)
                logits = ref.run_with_patch(model, tokens, name, value)
                out[layer, pos] = float(metric(logits if scored is None else scored(locals())))
        return (out - low) / (high - low)

    return patch_sweep


def _one(target, source, pos):
    value = target.clone()
    value[:, pos] = source[:, pos]
    return value


def test_rejects_every_position_patched_at_once():
    learner = _sweep_with(lambda target, source, pos: source)
    assert_rejects(checks.check_patch_sweep, learner, "patched every position at once")


def test_rejects_the_corrupted_run_patched_into_the_clean_one():
    learner = _sweep_with(_one, into_clean=True)
    assert_rejects(checks.check_patch_sweep, learner, "into the clean run")


def test_rejects_a_cache_changed_in_place():
    def in_place(target, source, pos):
        target[:, pos] = source[:, pos]  # no copy: the cache keeps every earlier patch
        return target

    assert_rejects(checks.check_patch_sweep, _sweep_with(in_place), "`.clone()`")


def test_rejects_layers_off_by_one_either_way():
    after = _sweep_with(
        _one, hook_name=lambda hook, layer: f"blocks.{layer}.{hook.replace('_pre', '_post')}"
    )
    assert_rejects(checks.check_patch_sweep, after, "layer after", "off by one")
    before = _sweep_with(
        _one, hook_name=lambda hook, layer: f"blocks.{layer}.{hook.replace('_post', '_pre')}"
    )
    message = assert_rejects(checks.check_patch_sweep, before, "layer before", "off by one")
    assert "hook_resid_post" in message


def test_rejects_the_unpatched_run_scored():
    learner = _sweep_with(_one, scored=lambda scope: scope["corrupted_logits"])
    assert_rejects(checks.check_patch_sweep, learner, "without the patch")


def test_rejects_the_clean_run_scored():
    learner = _sweep_with(_one, scored=lambda scope: scope["clean_logits"])
    assert_rejects(checks.check_patch_sweep, learner, "scored the clean run")


def test_rejects_the_first_row_of_the_batch_only():
    def first_row(target, source, pos):
        value = target.clone()
        value[0, pos] = source[0, pos]
        return value

    assert_rejects(checks.check_patch_sweep, _sweep_with(first_row), "first row of the batch")


def test_rejects_wrong_normalisations_and_shapes():
    def raw(model, clean, corrupted, metric, hook="hook_resid_pre"):
        _, clean_cache = ref.run_with_cache(model, clean)
        corrupted_logits, _ = ref.run_with_cache(model, corrupted)
        clean_logits = ref.run_with_hooks(model, clean, lambda n, x: x)
        low, high = float(metric(corrupted_logits)), float(metric(clean_logits))
        return ref.patch_sweep(model, clean, corrupted, metric, hook) * (high - low) + low

    assert_rejects(checks.check_patch_sweep, raw, "unnormalised")
    flipped = lambda *args: 1 - ref.patch_sweep(*args)  # noqa: E731
    assert_rejects(checks.check_patch_sweep, flipped, "other way round")
    transposed = lambda *args: ref.patch_sweep(*args).T  # noqa: E731
    assert_rejects(checks.check_patch_sweep, transposed, "[posn, n_layers]")


def test_rejects_a_hook_left_on_the_model():
    def patch_sweep(model, clean, corrupted, metric, hook="hook_resid_pre"):
        seen = []
        model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(1))
        return ref.patch_sweep(model, clean, corrupted, metric, hook)

    assert_rejects(checks.check_patch_sweep, patch_sweep, "hooks are still on blocks.0", "remove()")


def test_rejects_a_model_changed_by_the_sweep():
    def patch_sweep(model, clean, corrupted, metric, hook="hook_resid_pre"):
        out = ref.patch_sweep(model, clean, corrupted, metric, hook)
        with torch.no_grad():
            model.unembed.b_U.add_(1.0)
        return out

    assert_rejects(checks.check_patch_sweep, patch_sweep, "other logits after your patch_sweep")
