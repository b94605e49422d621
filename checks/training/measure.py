"""The checkers of chapter 6b's two measurements of a training step: its model FLOPs
utilisation (against chapter 6's count of a step's FLOPs) and the memory it holds (parameters,
gradients, optimizer state, saved activations, as PyTorch's tensors report them)."""

import torch

from checks._core import exercise, seeded
from checks.training._common import SMALL, _as_float, _model, _number
from solutions import training as ref
from solutions.attention import attention_flops
from solutions.config import Config
from solutions.scaling import approx_params, exact_params

# --- Model FLOPs utilisation -------------------------------------------------------------------

# n_heads · d_head = d_model in each: there approx_params is exactly the matrices a token meets.
MFU_CASES = [
    (Config(d_model=64, d_vocab=512, n_ctx=64, d_head=16, d_mlp=256, n_heads=4, n_layers=2), 3e4, 2e10),
    (Config(d_model=128, d_vocab=4096, n_ctx=128, d_head=32, d_mlp=512, n_heads=4, n_layers=4), 5e3, 5e10),
    (Config(d_model=768, d_vocab=50257, n_ctx=1024, d_head=64, d_mlp=3072, n_heads=12, n_layers=12), 2e5, 1e15),
]  # fmt: skip


@exercise(ref.model_flops_utilisation)
def check_model_flops_utilisation(check, model_flops_utilisation):
    for cfg, tokens_per_s, peak in MFU_CASES:
        with check.case(
            f"d_model {cfg.d_model}, {cfg.n_layers} layers, n_ctx {cfg.n_ctx}, "
            f"{tokens_per_s:g} tokens/s against a peak of {peak:g} FLOP/s"
        ):
            got = check.call(model_flops_utilisation, cfg, tokens_per_s, peak)
            expected = ref.model_flops_utilisation(cfg, tokens_per_s, peak)
            n, attention = approx_params(cfg), attention_flops(cfg, cfg.n_ctx) / cfg.n_ctx
            rate = lambda per_token, t=tokens_per_s, p=peak: t * per_token / p  # noqa: E731
            _number(
                check,
                _as_float(check, got, "utilisation"),
                expected,
                "utilisation",
                {
                    "counted the forward pass only: backward costs twice the forward's "
                    "FLOPs, so a training step costs three times the forward": rate(
                        2 * n + attention
                    ),
                    "left attention's two n_ctx × n_ctx products out of the count": rate(6 * n),
                    "counted attention's products once, in the forward pass only: like every "
                    "product, they cost twice as much again in backward": rate(6 * n + attention),
                    "counted every parameter (exact_params): the embeddings and positions are "
                    "looked up, not multiplied, and biases and LayerNorms do no matrix "
                    "products; count the matrices a token goes through": rate(
                        6 * exact_params(cfg) + 3 * attention
                    ),
                    "returned a percentage: MFU is a fraction, between 0 and 1": 100 * expected,
                },
            )


# --- Training memory ---------------------------------------------------------------------------


def _saved(model, batch) -> dict[str, int]:
    """Bytes of the tensors saved for backward, counted in the ways a learner might."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    counts = {"once": {}, "every": 0, "numbers": {}, "with weights": {}, "by tensor": {}}

    def pack(t):
        storage, ptr = t.untyped_storage(), t.untyped_storage().data_ptr()
        counts["with weights"][ptr] = storage.nbytes()
        if ptr not in weights:
            counts["every"] += t.numel() * t.element_size()
            counts["by tensor"][t.data_ptr()] = t.numel() * t.element_size()
            counts["once"][ptr] = storage.nbytes()
            counts["numbers"][ptr] = storage.nbytes() // max(1, t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ref.window_loss(model, batch)
    return {k: v if isinstance(v, int) else sum(v.values()) for k, v in counts.items()}


KEYS = ("parameters", "gradients", "optimizer", "activations")


@exercise(ref.training_memory)
def check_training_memory(check, training_memory):
    for i, batch_size in enumerate([2, 5]):
        with check.case(f"one step of the course's AdamW on a batch of {batch_size} windows"):
            batch = torch.randint(
                SMALL.d_vocab, (batch_size, SMALL.n_ctx + 1), generator=seeded(150 + i)
            )
            theirs, ours = _model(160 + i), _model(160 + i)
            optimizer = lambda m: ref.AdamW(ref.param_groups(m, 0.1), lr=1e-3)  # noqa: E731
            got = check.call(training_memory, theirs, optimizer(theirs), batch.clone())
            expected = ref.training_memory(ours, optimizer(ours), batch.clone())
            if not isinstance(got, dict):
                check.fail(f"return a dict with the keys {', '.join(KEYS)}, got {got!r:.80}.")
            missing = [k for k in KEYS if k not in got]
            if missing:
                check.fail(f"the dict has no {', '.join(map(repr, missing))}: its keys are {KEYS}.")
            saved = _saved(_model(160 + i), batch)
            numbers = "counted numbers, not bytes: multiply each count by t.element_size()"
            for key in KEYS:
                mistakes = {numbers: expected[key] / 4}
                if key == "optimizer":
                    mistakes["counted one of AdamW's two moments: m and v are both kept"] = (
                        expected[key] / 2
                    )
                    mistakes["counted the parameters, not the optimizer's state"] = expected[
                        "parameters"
                    ]
                if key == "activations":
                    mistakes = {
                        numbers: saved["numbers"],
                        "counted a block of memory each time a tensor in it was saved: views "
                        "and tensors saved by two operations share their storage; count each "
                        "storage (t.untyped_storage()) once": saved["every"],
                        "counted the parameters among the activations: the weights a product "
                        "saves for backward are held anyway": saved["with weights"],
                        "counted each saved tensor's own entries: a view may cover part of its "
                        "storage, which is held whole; count t.untyped_storage().nbytes(), "
                        "once per storage": saved["by tensor"],
                    }
                _number(
                    check, _as_float(check, got[key], f'"{key}" bytes'), expected[key],
                    f'"{key}" bytes', mistakes,
                )  # fmt: skip
