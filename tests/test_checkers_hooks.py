"""Checkers of code handed a model fail code that leaves a hook on any of its modules (not
only the one the exercise names), and check a hook-name prefix with more than one value,
TransformerLens's full names included. Code that removes its hooks passes."""

import pytest
import torch

from checks import neurons as neuron_checks
from checks import residual as checks
from checks.circuits import check_composition_scores
from solutions import circuits as circuits_ref
from solutions import neurons as neurons_ref
from solutions import residual as ref
from support import assert_accepts, assert_rejects


def _leave(module, pre=False):
    """Register a hook that does nothing and is never removed."""
    if pre:
        module.register_forward_pre_hook(lambda mod, args: None)
    else:
        module.register_forward_hook(lambda mod, args, out: None)


def _run_with_cache_leaving_on_ln_final(model, tokens, patches=None):
    _leave(model.ln_final)
    return ref.run_with_cache(model, tokens, patches)


def _run_with_cache_leaving_on_every_block(model, tokens, patches=None):
    for block in model.blocks:
        _leave(block)
    return ref.run_with_cache(model, tokens, patches)


def _run_with_cache_leaving_a_pre_hook_deep(model, tokens, patches=None):
    _leave(model.blocks[-1].attn, pre=True)
    return ref.run_with_cache(model, tokens, patches)


def _run_with_hooks_leaving_on_unembed(model, tokens, hook):
    _leave(model.unembed)
    return ref.run_with_hooks(model, tokens, hook)


def _attention_with_hooks_leaving_on_attn(attn, normalized, name, hook):
    _leave(attn, pre=True)
    return ref.attention_with_hooks(attn, normalized, name, hook)


def _patch_sweep_leaving_on_a_norm(model, clean, corrupted, metric, hook="hook_resid_pre"):
    _leave(model.blocks[0].ln1, pre=True)
    return ref.patch_sweep(model, clean, corrupted, metric, hook)


def _neuron_activations_leaving_a_hook(model, tokens, layer):
    _leave(model.blocks[layer].mlp)
    return neurons_ref.neuron_activations(model, tokens, layer)


def _logit_lens_leaving_a_hook(cache, model):
    _leave(model.ln_final, pre=True)
    return ref.logit_lens(cache, model)


def _composition_leaving_a_hook(model, kind):
    _leave(model.blocks[1].attn, pre=True)
    return circuits_ref.composition_scores(model, kind)


LEFT = {
    "run_with_cache, on ln_final": (
        checks.check_run_with_cache, _run_with_cache_leaving_on_ln_final, "ln_final"
    ),
    "run_with_cache, on every block": (
        checks.check_run_with_cache, _run_with_cache_leaving_on_every_block, "blocks.0, blocks.1"
    ),
    "run_with_cache, a pre-hook on the last attention": (
        checks.check_run_with_cache, _run_with_cache_leaving_a_pre_hook_deep, ".attn"
    ),
    "run_with_hooks, on unembed": (
        checks.check_run_with_hooks, _run_with_hooks_leaving_on_unembed, "unembed"
    ),
    "attention_with_hooks, on attn": (
        checks.check_attention_with_hooks, _attention_with_hooks_leaving_on_attn, "the model"
    ),
    "patch_sweep, on blocks.0.ln1": (
        checks.check_patch_sweep, _patch_sweep_leaving_on_a_norm, "blocks.0.ln1"
    ),
    "neuron_activations, on the MLP": (
        neuron_checks.check_neuron_activations, _neuron_activations_leaving_a_hook, ".mlp"
    ),
    "logit_lens, on ln_final": (checks.check_logit_lens, _logit_lens_leaving_a_hook, "ln_final"),
    "composition_scores, on layer 1's attention": (
        check_composition_scores, _composition_leaving_a_hook, "blocks.1.attn"
    ),
}  # fmt: skip


@pytest.mark.parametrize("mistake", LEFT)
def test_checkers_name_every_module_a_hook_is_left_on(mistake):
    checker, learner, where = LEFT[mistake]
    assert_rejects(checker, learner, "hooks are still on", where, "handle.remove()")


def test_a_global_module_hook_left_behind_is_named():
    handles = []

    def run_with_cache(model, tokens, patches=None):
        handles.append(torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: None))
        return ref.run_with_cache(model, tokens, patches)

    try:
        assert_rejects(checks.check_run_with_cache, run_with_cache, "every module")
    finally:
        for handle in handles:
            handle.remove()


def test_hooks_removed_in_a_finally_pass(capsys):
    def run_with_cache(model, tokens, patches=None):
        seen = []
        handles = [m.register_forward_hook(lambda m, a, o: seen.append(o)) for m in model.modules()]
        try:
            model.embed(tokens)
        finally:
            for handle in handles:
                handle.remove()
        return ref.run_with_cache(model, tokens, patches)

    assert_accepts(checks.check_run_with_cache, run_with_cache, capsys)


def test_attention_with_hooks_is_checked_under_full_transformer_lens_names():
    def hard_wired(attn, normalized, name, hook):  # the prefix of the first case written in
        return ref.attention_with_hooks(attn, normalized, "attn", hook)

    assert_rejects(
        checks.check_attention_with_hooks, hard_wired, "blocks.2.attn.hook_q", "attn.hook_q"
    )


def test_attention_with_hooks_rejects_a_layer_written_into_the_prefix():
    def layer_0(attn, normalized, name, hook):
        return ref.attention_with_hooks(attn, normalized, f"blocks.0.{name.split('.')[-1]}", hook)

    assert_rejects(checks.check_attention_with_hooks, layer_0, "names differ", "blocks.0.attn")
