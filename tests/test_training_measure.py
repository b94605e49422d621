"""Chapter 6b's checkers of the two measurements of a training step, its model FLOPs
utilisation and its memory: each accepts the reference and another correct way of writing
it, and names the mistakes learners make."""

import torch

from checks import training as checks
from solutions import training as ref
from solutions.attention import attention_flops
from solutions.config import TINY
from solutions.scaling import approx_params, exact_params
from solutions.transformer import Transformer
from support import assert_accepts, assert_rejects

# --- Model FLOPs utilisation -------------------------------------------------------------------


def test_mfu_accepts_the_reference_and_every_product_counted_by_hand(capsys):
    assert_accepts(checks.check_model_flops_utilisation, ref.model_flops_utilisation, capsys)

    def by_hand(cfg, tokens_per_s, peak_flops):
        d, heads = cfg.d_model, cfg.n_heads * cfg.d_head
        matrices = cfg.n_layers * (4 * d * heads + 2 * d * cfg.d_mlp) + d * cfg.d_vocab
        scores_and_mix = cfg.n_layers * cfg.n_heads * 2 * (2 * cfg.n_ctx * cfg.d_head)
        return tokens_per_s * 3 * (2 * matrices + scores_and_mix) / peak_flops

    assert_accepts(checks.check_model_flops_utilisation, by_hand, capsys)


def mfu(*, factor=6, attention=3, count=approx_params, scale=1):
    def model_flops_utilisation(cfg, tokens_per_s, peak_flops):
        per_token = factor * count(cfg) + attention * attention_flops(cfg, cfg.n_ctx) / cfg.n_ctx
        return scale * tokens_per_s * per_token / peak_flops

    return model_flops_utilisation


def test_mfu_names_the_mistakes():
    check = checks.check_model_flops_utilisation
    assert_rejects(check, mfu(factor=2, attention=1), "forward pass only")
    assert_rejects(check, mfu(attention=0), "left attention")
    assert_rejects(check, mfu(attention=1), "once, in the forward pass only")
    assert_rejects(check, mfu(count=exact_params), "looked up, not multiplied")
    assert_rejects(check, mfu(scale=100), "percentage")


# --- Training memory ---------------------------------------------------------------------------


def memory(*, element=True, once=True, skip_weights=True, moments=2):
    def training_memory(model, optimizer, batch):
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved, every = {}, [0]

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in weights or not skip_weights:
                nbytes = t.untyped_storage().nbytes()
                saved[ptr] = nbytes
                every[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = ref.window_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        size = lambda ts: sum(t.numel() * (t.element_size() if element else 1) for t in ts)  # noqa: E731
        state = [s[k] for s in optimizer.state.values() for k in ("m", "v")[:moments]]
        return {
            "parameters": size(model.parameters()),
            "gradients": size(p.grad for p in model.parameters()),
            "optimizer": size(state),
            "activations": sum(saved.values()) if once else every[0],
        }

    return training_memory


def test_training_memory_accepts_the_reference_and_a_loop_over_the_state(capsys):
    assert_accepts(checks.check_training_memory, ref.training_memory, capsys)
    assert_accepts(checks.check_training_memory, memory(), capsys)


def test_training_memory_names_the_mistakes():
    check = checks.check_training_memory
    assert_rejects(check, memory(element=False), "numbers, not bytes")
    assert_rejects(check, memory(once=False), "count each storage")
    assert_rejects(check, memory(skip_weights=False), "parameters among the activations")
    assert_rejects(check, memory(moments=1), "one of AdamW's two moments")
    assert_rejects(check, lambda m, o, b: [1, 2, 3, 4], "return a dict")


def test_the_state_costs_16_bytes_per_parameter():
    cfg = TINY.but(n_ctx=8, n_layers=1)
    torch.manual_seed(0)
    model = Transformer(cfg)
    optimizer = ref.AdamW(ref.param_groups(model, 0.1), lr=1e-3)
    held = ref.training_memory(model, optimizer, torch.randint(cfg.d_vocab, (2, cfg.n_ctx + 1)))
    assert held["parameters"] + held["gradients"] + held["optimizer"] == 16 * exact_params(cfg)
