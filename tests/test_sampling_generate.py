"""The checker of chapter 7's generation loop: it rejects a learner's usual mistakes, each by
name, and accepts a generate written differently from the reference."""

import pytest
import torch

from checks import sampling as checks
from solutions.sampling import (
    KVCache,
    apply_penalties,
    forward_with_cache,
    generate,
    left_pad,
    sample_next_token,
)
from support import assert_accepts, assert_rejects


def generate_variant(
    *,
    new_mask_only=False,
    no_mask=False,
    whole_sequence=False,
    keep_eos=False,
    stop_all=False,
    global_rng=False,
    fixed_seed=False,
    penalise_prompt=False,
    no_window=False,
):
    """A generate written apart from the reference (the cache rebuilt from the window, the
    stop test once per row), each switch one mistake."""

    @torch.no_grad()
    def learner(model, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                frequency_penalty=0.0, presence_penalty=0.0, eos_token_id=None, stop=None,
                seed=0, use_cache=True):  # fmt: skip
        generator = torch.Generator().manual_seed(0 if fixed_seed else seed)
        tokens, mask = left_pad(prompts)
        n_prompt, n_ctx = tokens.shape[1], model.cfg.n_ctx
        out = [[] for _ in prompts]
        running = [True] * len(prompts)
        cache = KVCache(len(model.blocks)) if use_cache else None
        fed = tokens
        for _ in range(max_new_tokens):
            seen = tokens if no_window else tokens[:, -n_ctx:]
            seen_mask = mask if no_window else mask[:, -n_ctx:]
            if use_cache and (seen.shape[1] < tokens.shape[1]):
                cache, fed = KVCache(len(model.blocks)), seen
            if whole_sequence and use_cache:
                fed = seen
            step_mask = seen_mask[:, -fed.shape[1] :] if new_mask_only and use_cache else seen_mask
            step_mask = None if no_mask else step_mask
            logits = forward_with_cache(model, fed if use_cache else seen, cache, step_mask)[:, -1]
            history = tokens if penalise_prompt else tokens[:, n_prompt:]
            logits = apply_penalties(logits, history, frequency_penalty, presence_penalty)
            drawn = sample_next_token(logits, temperature, top_k, top_p,
                                      None if global_rng else generator)  # fmt: skip
            tokens = torch.cat([tokens, drawn[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            fed = drawn[:, None]
            for row, token in enumerate(drawn.tolist()):
                if not running[row]:
                    continue
                if token == eos_token_id:
                    running = [False] * len(prompts) if stop_all else running
                    running[row] = False
                    if not keep_eos:
                        continue
                out[row].append(token)
                if stop is not None and stop(out[row]):
                    running[row] = False
            if not any(running):
                break
        return out

    return learner


def test_check_generate_accepts_the_reference_and_a_variant(capsys):
    assert_accepts(checks.check_generate, generate, capsys)
    assert_accepts(checks.check_generate, generate_variant(), capsys)


@pytest.mark.parametrize(
    "switch, diagnosis",
    [
        ("new_mask_only", "the positions went wrong"),
        ("whole_sequence", "fed the model more than the new token"),
        ("no_mask", "the padding counts"),
        ("global_rng", "two runs with seed 3 drew different tokens"),
        ("fixed_seed", "seeds 3 and 4 drew the same tokens"),
        ("penalise_prompt", "counting only the tokens generated so far"),
        ("keep_eos", "kept the end-of-sequence token"),
        ("stop_all", "Each row stops on its own"),
        ("no_window", "read the last n_ctx only"),
    ],
)
def test_check_generate_names_mistakes(switch, diagnosis):
    assert_rejects(checks.check_generate, generate_variant(**{switch: True}), diagnosis)


def test_check_generate_rejects_the_stub():
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert_rejects(checks.check_generate, stub, "not implemented yet")


def test_check_generate_names_a_hook_left_on_the_model():
    def leaving_a_hook(model, prompts, n_new, **kw):
        model.blocks[0].attn.register_forward_pre_hook(lambda module, args: None)
        return generate(model, prompts, n_new, **kw)

    assert_rejects(checks.check_generate, leaving_a_hook, "hooks are still on blocks.0.attn")
