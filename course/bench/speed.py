"""The course model's training step with the usual speed switches one by one, beside nanoGPT's
model.py when a copy is at hand: `python -m course.bench speed`, which chapter 6b quotes.

Besides tokens per second, each row counts the PyTorch operations one step dispatches. On a
GPU each is about one kernel launch, and a model this small is launch-bound there: the count,
which any machine measures the same, says what a GPU's time will follow.
"""

import contextlib
import io
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from torch.utils._python_dispatch import TorchDispatchMode

# The rows chapter 6b compares: the reference, fused, stepping with ForeachAdamW (AdamW's
# numbers in fewer operations); the same without b_U; and nanoGPT's GPT computing that
# function (COURSE_MODEL's shape, unembedding untied, GPT-2's GELU): like with like.
REFERENCE = "+ one QKV product, addmm: fused=True"
WITHOUT_B_U = "fused, no b_U"
NANOGPT = "nanoGPT, untied, tanh GELU"

# Operations that launch nothing: allocations (memory from PyTorch's cache, left
# unwritten), reads of a Python number from a tensor on the CPU (an optimizer's step count),
# and the profiler's markers around optimizer.step.
_NOT_LAUNCHES = {
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
    "new_empty_strided",
    "_unsafe_view",  # reshape's view of the copy it has just made
    "_local_scalar_dense",
    "_record_function_enter_new",
    "_record_function_exit",
}


class _OperationCounter(TorchDispatchMode):
    """Counts the operations dispatched inside it, views left out: a view moves no data."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in _NOT_LAUNCHES:
            self.count += 1
        return func(*args, **(kwargs or {}))


def operations_per_step(step, windows) -> int:
    """The PyTorch operations (views left out) one call of `step(windows)` dispatches."""
    counter = _OperationCounter()
    with counter:
        step(windows)
    return counter.count


def bench_speed(
    steps: int = 20,
    nanogpt: str | None = None,
    threads: int | None = None,
    cfg=None,
    batch: int | None = None,
) -> dict:
    """Training throughput (tokens/s) of the reference at COURSE_MODEL, batch of
    COURSE_TRAINING, with the usual speed switches one by one: fused kernels (SDPA and
    F.layer_norm), then Q, K and V from one product and biases added inside the products
    (Transformer(cfg, fused=True)), stepping with ForeachAdamW; then that model with the
    course's AdamW or PyTorch's two AdamWs in place of ForeachAdamW, under torch.compile,
    without b_U, and on a GPU under bf16 autocast. `nanogpt` is a folder holding nanoGPT's
    model.py: its GPT at the same shape (its MLP is 4 d_model = d_mlp, its heads d_model /
    n_heads = d_head) is timed beside, as it is (its unembedding tied to its embedding, its
    GELU exact), untied as COURSE_MODEL is, and untied with GPT-2's tanh GELU, which makes it
    the course model's function less b_U. It steps with the fused AdamW its
    configure_optimizers picks on a GPU. Every row also counts the operations one step
    dispatches (`operations_per_step`).

    The GPU when there is one, else the CPU with the threads the course model trains with
    (or `threads`: on a machine busy with other programs, one thread times more steadily).
    Median wall time of `steps` steps after two warm-up steps (torch.compile compiles in the
    first: its time is printed apart), the contenders taking turns step by step.
    """
    import importlib.util

    import torch

    from course.models.train_course_model import COURSE_TRAINING
    from solutions.config import COURSE_MODEL
    from solutions.training import (
        AdamW,
        ForeachAdamW,
        clip_grad_norm,
        param_groups,
        window_loss,
    )
    from solutions.transformer import Transformer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # cfg and batch: another shape, for a quick run (the tests)
    cfg, batch, lr = cfg or COURSE_MODEL, batch or COURSE_TRAINING.batch_size, 1e-3
    betas = COURSE_TRAINING.betas

    def ours(build, optimizer=ForeachAdamW, compile_=False, amp=False):
        """`optimizer`: the course's AdamW or ForeachAdamW (its numbers, bit for bit), or
        "foreach" or "fused" for torch.optim.AdamW so implemented. Named, not left to
        PyTorch, which picks foreach only for GPU tensors: the same operations on every
        device, so that the counts predict a GPU's."""

        def make():
            model = build().to(device).train()
            groups = param_groups(model, 0.1)
            if isinstance(optimizer, str):
                opt = torch.optim.AdamW(groups, lr=lr, betas=betas, **{optimizer: True})
            else:
                opt = optimizer(groups, lr=lr, betas=betas)
            run = torch.compile(model) if compile_ else model

            def step(w):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = window_loss(run, w)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                clip_grad_norm(model.parameters(), 1.0)
                opt.step()

            return model, step

        return make

    def nanogpt_contender(path, tied=True, tanh=False):
        spec = importlib.util.spec_from_file_location("nanogpt_model", Path(path) / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        def make():
            config = module.GPTConfig(
                block_size=cfg.n_ctx,
                vocab_size=cfg.d_vocab,
                n_layer=cfg.n_layers,
                n_head=cfg.n_heads,
                n_embd=cfg.d_model,
                dropout=0.0,
                bias=True,
            )
            model = module.GPT(config)
            if not tied:  # W_U apart from W_E, as in COURSE_MODEL
                model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
            if tanh:  # GPT-2's GELU, and the course's, in place of its exact one
                for block in model.transformer.h:
                    block.mlp.gelu = torch.nn.GELU(approximate="tanh")
            model = model.to(device).train()
            with contextlib.redirect_stdout(io.StringIO()):
                # "cuda": its fused AdamW, which it picks only there, and which PyTorch now
                # runs on a CPU too: the same operations on every device.
                opt = model.configure_optimizers(0.1, lr, betas, "cuda")

            def step(w):
                # Its loss flattens the targets with .view: they must be contiguous.
                _, loss = model(w[:, :-1].contiguous(), w[:, 1:].contiguous())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()

            return model, step

        return make

    contenders = {
        "explicit attention and LayerNorm": ours(lambda: Transformer(cfg)),
        "+ SDPA, F.layer_norm": ours(lambda: _sdpa_only_transformer(cfg)),
        REFERENCE: ours(lambda: Transformer(cfg, fused=True)),
        "fused, the course's AdamW (per tensor)": ours(lambda: Transformer(cfg, fused=True), AdamW),
        "fused, torch AdamW(foreach=True)": ours(lambda: Transformer(cfg, fused=True), "foreach"),
        "fused, torch AdamW(fused=True)": ours(lambda: Transformer(cfg, fused=True), "fused"),
        "fused + torch.compile": ours(lambda: Transformer(cfg, fused=True), compile_=True),
        WITHOUT_B_U: ours(lambda: _without_b_U(cfg)),
    }
    if device.type == "cuda":
        contenders["fused + bf16 autocast"] = ours(lambda: Transformer(cfg, fused=True), amp=True)
        contenders["fused + compile + bf16"] = ours(
            lambda: Transformer(cfg, fused=True), compile_=True, amp=True
        )
    if nanogpt:
        contenders["nanoGPT model.py (tied)"] = nanogpt_contender(nanogpt)
        contenders["nanoGPT, untied"] = nanogpt_contender(nanogpt, tied=False)
        contenders[NANOGPT] = nanogpt_contender(nanogpt, tied=False, tanh=True)
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, cfg.d_vocab, (steps + 2, batch, cfg.n_ctx + 1), generator=g)
    runs, times, failed = {}, {}, {}
    for name, make in contenders.items():
        torch.manual_seed(0)
        runs[name], times[name] = make(), []
    # The threads the course model trains with, or `threads`, while timing; then as they were
    # (a notebook that calls this goes on with its own).
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads or min(2, os.cpu_count() or 1))
    try:
        for w in windows.to(device):
            for name, (_, step) in list(runs.items()):
                if name in failed:
                    continue
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                try:
                    step(w)
                except Exception as error:  # torch.compile without a working compiler, say
                    failed[name] = f"{type(error).__name__}: {str(error)[:200]}"
                    continue
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
        where = (
            torch.cuda.get_device_name()
            if device.type == "cuda"
            else f"CPU, {torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}"
        )
    finally:
        torch.set_num_threads(threads_before)
    shape = "COURSE_MODEL" if cfg == COURSE_MODEL else str(cfg)
    print(
        f"Training step at {shape} (batch {batch} x {cfg.n_ctx} tokens) on {where}, "
        f"torch {torch.__version__}, median of {steps} steps:"
    )
    print(f"  {'':<40}{'tokens/s':>9}  {'':5}  operations per step")
    result = {
        "device": where,
        "torch": torch.__version__.split("+")[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "tokens_per_step": batch * cfg.n_ctx,
        "steps": steps,
        "rows": [],
    }
    for name, ts in times.items():
        if name in failed:
            print(f"  {name:<40}failed: {failed[name]}")
            continue
        row = {"name": name, "tokens_per_s": round(batch * cfg.n_ctx / median(ts[2:]))}
        if "compile" in name:  # counting would trace through the compiled graph: not done
            row["compile_s"] = round(ts[0], 1)
            count = f"(first step, compiling: {ts[0]:.0f} s)"
        else:
            row["operations"] = operations_per_step(runs[name][1], windows[-1].to(device))
            count = f"{row['operations']:5d}"
        ratio = row["tokens_per_s"] / (result["rows"] or [row])[0]["tokens_per_s"]
        print(f"  {name:<40}{row['tokens_per_s']:9,}  {ratio:5.2f}x  {count}")
        result["rows"].append(row)
    return result


def _without_b_U(cfg):
    """Transformer(cfg, fused=True) whose unembedding has no bias, as nanoGPT's lm_head and
    HuggingFace's GPT-2 have none: the same model as theirs, to time like with like."""
    from solutions.embeddings import Unembed
    from solutions.transformer import Transformer

    class UnembedWithoutBias(Unembed):
        def __init__(self, cfg):
            super().__init__(cfg)
            del self.b_U

        def forward(self, residual):
            return residual @ self.W_U

    model = Transformer(cfg, fused=True)
    model.unembed = UnembedWithoutBias(cfg)
    return model


def _sdpa_only_transformer(cfg):
    """The reference with F.layer_norm and scaled_dot_product_attention, but Q, K and V from
    three products and every bias added apart: Transformer(cfg, fused=True) less its fused
    QKV and its biases inside the products, to time those apart."""
    import einops
    import torch.nn.functional as F

    from solutions.embeddings import Unembed
    from solutions.fused import FusedAttention
    from solutions.mlp import MLP
    from solutions.transformer import Transformer

    class SeparateQKVAttention(FusedAttention):
        def forward(self, x):
            to_heads = "batch posn d_model, n_heads d_model d_head -> batch n_heads posn d_head"
            q = einops.einsum(x, self.W_Q, to_heads) + self.b_Q[:, None]
            k = einops.einsum(x, self.W_K, to_heads) + self.b_K[:, None]
            v = einops.einsum(x, self.W_V, to_heads) + self.b_V[:, None]
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            from_heads = "batch n_heads posn d_head, n_heads d_head d_model -> batch posn d_model"
            return einops.einsum(z, self.W_O, from_heads) + self.b_O

    model = Transformer(cfg, fused=True)
    state = model.state_dict()
    for block in model.blocks:
        block.attn, block.mlp = SeparateQKVAttention(cfg), MLP(cfg)
    model.unembed = Unembed(cfg)
    model.load_state_dict(state)
    return model
