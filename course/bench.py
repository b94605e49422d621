"""Time the course's code: `python -m course.bench` (or `make bench`).

Checks: every checker on its reference solution; a check should answer in about
a second on a 2-core laptop CPU, and slower ones are flagged. Training: chapter 1's two BPE
trainers side by side on the whole corpus, written to course/data/bpe_train_times.json, which
the chapter quotes when run with `--record` (a plain run only prints, so it never leaves the
stored chapter out of date). Model: training throughput of the reference GPT-2 at the
course-model config: the reference explicit and fused, and HuggingFace's GPT-2, side by side.
Scaling: chapter 6's measured costs (attention time against context length, matmul
throughput against width), written with `--record` to course/data/scaling_times.json, which
the chapter plots. GPT-2: chapter 7's GPT-2 small against HuggingFace's on the same weights, a
forward pass and 100 tokens of greedy generation (with and without the KV cache), which
chapter 7 quotes. Speed: the course model's training step with the usual speed switches, one
by one, in tokens/s and operations per step (`--nanogpt PATH` adds nanoGPT's model.py from
PATH, side by side), written with `--record` to course/data/speed_cpu.json (on a GPU,
speed_gpu.json), which chapter 6b prints. `python -m course.bench checks`, `training`, `model`, `scaling`, `gpt2` or `speed`
runs one section.
"""

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import checks
from course.bench_speed import bench_speed
from course.corpus import load_corpus

BUDGET_S = 1.5
TRAIN_VOCAB_SIZE = 4096
TRAIN_TIMES = Path(__file__).parent / "data" / "bpe_train_times.json"
SCALING_TIMES = Path(__file__).parent / "data" / "scaling_times.json"
# The training step's speed, as measured on a CPU (which chapter 6b prints) and on a GPU.
SPEED_TIMES = {
    "cpu": Path(__file__).parent / "data" / "speed_cpu.json",
    "cuda": Path(__file__).parent / "data" / "speed_gpu.json",
}


def _record(result: dict, path: Path, use: str, stem: str | None = None) -> None:
    """Store timings that a chapter quotes, and say how to refresh that chapter (`stem`: its
    solved notebook, whose stored outputs quote them; None: a book page, run at each build)."""
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    refresh = (
        f"refresh its solved notebook with `python -m course.notebooks build {stem} --force`"
        if stem
        else "the book runs that page at every build"
    )
    print(f"written to course/data/{path.name}, which {use}: {refresh}")


def bench_checks() -> None:
    rows = []
    for ex in checks.all_exercises():
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            ex.checker(ex.reference)
        rows.append((time.perf_counter() - start, ex.chapter, ex.name))
    for seconds, chapter, name in sorted(rows, reverse=True):
        flag = "  <- over budget" if seconds > BUDGET_S else ""
        print(f"{seconds:6.2f} s  {chapter}.{name}{flag}")
    print(
        f"{len(rows)} checks, slowest {max(rows)[0]:.2f} s, total {sum(r[0] for r in rows):.1f} s"
    )


def bench_training(vocab_size: int = TRAIN_VOCAB_SIZE, record: bool = False) -> dict:
    """Both trainers on the whole corpus; they must learn the same merges.

    Times are CPU seconds of this process (time.process_time), which other programs running
    on the machine hardly change; both trainers use one core.
    """
    from solutions.tokenizer import BPETokenizer, train_incremental

    corpus = load_corpus()
    trainers = {
        "simple": lambda: BPETokenizer.train(corpus, vocab_size).merges,
        "incremental": lambda: train_incremental(corpus, vocab_size),
    }
    seconds, merges = {}, {}
    for name, train in trainers.items():
        start = time.process_time()
        merges[name] = list(train().items())
        seconds[name] = time.process_time() - start
    if merges["simple"] != merges["incremental"]:
        raise AssertionError("the two trainers learned different merges")
    result = {
        "vocab_size": vocab_size,
        "corpus_characters": len(corpus),
        "merges": len(merges["simple"]),
        "simple_cpu_s": round(seconds["simple"], 1),
        "incremental_cpu_s": round(seconds["incremental"], 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    print(
        f"BPE training, {vocab_size:,}-token vocabulary on the whole corpus "
        f"({len(corpus):,} characters), the same {result['merges']:,} merges, CPU time:\n"
        f"  {'BPETokenizer.train (simple)':<34}{result['simple_cpu_s']:8.1f} s\n"
        f"  {'train_incremental':<34}{result['incremental_cpu_s']:8.2f} s"
        f"  ({seconds['simple'] / seconds['incremental']:.0f}x faster)"
    )
    if record:
        _record(result, TRAIN_TIMES, "chapter 1 prints", "01_embeddings")
    return result


def bench_model(steps: int = 20) -> dict:
    """Training tokens per second at COURSE_MODEL (batch of COURSE_TRAINING): the reference
    with each attention, and HuggingFace's GPT2LMHeadModel of the same shape beside them.

    Each figure is the median wall time of `steps` optimizer steps after one warm-up step, the
    contenders taking turns step by step, on
    random tokens (the speed does not depend on the text), with the threads the course model
    trains with. Wall time, as a training run feels it: other programs on the machine slow it.
    """
    import torch
    import torch.nn.functional as F

    from course.config import COURSE_MODEL
    from course.train_course_model import COURSE_TRAINING
    from solutions.training import param_groups, window_loss
    from solutions.transformer import Transformer

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg, batch = COURSE_MODEL, COURSE_TRAINING.batch_size
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, cfg.d_vocab, (steps + 1, batch, cfg.n_ctx + 1), generator=g)

    def huggingface_loss(model, w):
        logits = model(w[:, :-1]).logits
        return F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten())

    contenders = {
        "reference, explicit softmax": (lambda: Transformer(cfg), window_loss),
        "reference, fused (SDPA, one QKV product)": (
            lambda: Transformer(cfg, fused=True),
            window_loss,
        ),
        "HuggingFace GPT2LMHeadModel (sdpa)": (lambda: _huggingface_gpt2(cfg), huggingface_loss),
    }
    runs = {}
    for name, (build, loss_of) in contenders.items():
        torch.manual_seed(0)
        model = build().train()
        runs[name] = (model, loss_of, torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3), [])
    # Round robin, a step of each in turn, so that a slow spell of the machine hits all alike.
    for w in windows:
        for model, loss_of, optimizer, times in runs.values():
            start = time.perf_counter()
            loss = loss_of(model, w)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    result, sizes = {}, {}
    for name, (model, _, _, times) in runs.items():
        step_s = sorted(times[1:])[len(times[1:]) // 2]
        result[name] = batch * cfg.n_ctx / step_s
        sizes[name] = sum(p.numel() for p in model.parameters())
    print(
        f"Training throughput at COURSE_MODEL (batch {batch} x {cfg.n_ctx} tokens, "
        f"{torch.get_num_threads()} threads), median of {steps} steps:"
    )
    baseline = result["HuggingFace GPT2LMHeadModel (sdpa)"]
    for name, tokens_per_s in result.items():
        print(
            f"  {name:<45}{tokens_per_s:8,.0f} tokens/s  {tokens_per_s / baseline:5.2f}x  "
            f"({sizes[name] / 1e6:.2f}M parameters)"
        )
    return result


def bench_scaling(
    lengths: list[int] = [128, 256, 512, 1024, 2048],  # noqa: B006 (never mutated)
    widths: list[int] = [w - i for w in range(256, 1025, 64) for i in (1, 0)],  # noqa: B006
    repeats: int = 7,
    record: bool = False,
) -> dict:
    """Chapter 6's cost curves: one head's attention (d_head 64) at each context length, and a
    [1024, width] @ [width, width] matmul at each width, widths a multiple of 64 and one less.

    Each time is the least of `repeats` runs, taken in turns (every length, then every length
    again), on one thread, in CPU time (time.process_time): other programs on the machine hardly
    change it, and what they still add falls on every size alike.
    """
    import einops
    import torch

    from solutions.attention import apply_causal_mask, attention_scores

    def least_times(calls: list) -> list[float]:
        for call in calls:
            call()  # warm-up: first calls allocate
        best = [float("inf")] * len(calls)
        for _ in range(repeats):
            for i, call in enumerate(calls):
                start = time.process_time()
                call()
                best[i] = min(best[i], time.process_time() - start)
        return best

    def attention(q, k, v):
        pattern = apply_causal_mask(attention_scores(q, k)).softmax(-1)
        return einops.einsum(pattern, v, "b h q k, b k h d -> b q h d")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    heads = [torch.randn(3, 1, n, 1, 64, generator=g).unbind(0) for n in lengths]
    attention_s = least_times([lambda h=h: attention(*h) for h in heads])
    rows = 1024
    operands = [(torch.randn(rows, w, generator=g), torch.randn(w, w, generator=g)) for w in widths]
    matmul_s = least_times([lambda x=x, W=W: x @ W for x, W in operands])
    torch.set_num_threads(threads)
    result = {
        "lengths": lengths,
        "d_head": 64,
        "attention_s": [float(f"{s:.4g}") for s in attention_s],
        "matmul_rows": rows,
        "widths": widths,
        "matmul_s": [float(f"{s:.4g}") for s in matmul_s],
        "threads": 1,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    print(f"One head's attention (d_head 64), least CPU time of {repeats}, one thread:")
    for n, s in zip(lengths, attention_s, strict=True):
        print(f"  context {n:>5}: {s * 1e3:8.2f} ms")
    print(f"[{rows}, width] @ [width, width], least CPU time of {repeats}, one thread:")
    for w, s in zip(widths, matmul_s, strict=True):
        print(f"  width {w:>5}: {2 * rows * w * w / s / 1e9:6.1f} GFLOP/s")
    if record:
        _record(result, SCALING_TIMES, "chapter 6 plots", "06_scaling")
    return result


def bench_gpt2(repeats: int = 3, new_tokens: int = 100) -> dict:
    """Chapter 7: GPT-2 small (random weights, the same in both) in the reference and in
    HuggingFace's GPT2LMHeadModel. (a) A forward pass over one batch, (b) greedy generation
    of `new_tokens` tokens after a 10-token prompt: the reference with its KV cache (fused and
    explicit) and without, and HuggingFace's `generate` (with its cache), which must agree
    token for token.

    Median wall time of `repeats` runs (the contenders taking turns), no gradients, the
    machine's default threads.
    """
    import torch

    from course.config import Config
    from solutions.gpt2 import to_huggingface
    from solutions.sampling import generate
    from solutions.transformer import Transformer

    torch.manual_seed(0)
    explicit = Transformer(Config()).eval()
    with torch.no_grad():
        explicit.unembed.b_U.zero_()
    fused = Transformer(Config(), fused=True).eval()
    fused.load_state_dict(explicit.state_dict())
    hf_model = to_huggingface(explicit)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 50257, (2, 128), generator=g)
    prompt = torch.randint(0, 50257, (1, 10), generator=g)

    def hf_generate():
        out = hf_model.generate(
            prompt, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0, use_cache=True
        )
        return out[0, prompt.shape[1] :].tolist()

    forward = {
        "reference, explicit": lambda: explicit(batch),
        "reference, fused": lambda: fused(batch),
        "HuggingFace GPT2LMHeadModel": lambda: hf_model(batch).logits,
    }
    generation = {
        "reference, fused, KV cache": lambda: generate(
            fused, prompt.tolist(), new_tokens, temperature=0.0
        )[0],
        "reference, explicit, KV cache": lambda: generate(
            explicit, prompt.tolist(), new_tokens, temperature=0.0
        )[0],
        "reference, fused, no cache": lambda: generate(
            fused, prompt.tolist(), new_tokens, temperature=0.0, use_cache=False
        )[0],
        "HuggingFace generate (cache)": hf_generate,
    }
    results = {}
    for title, contenders, unit in [
        (f"GPT-2 small forward pass, batch {tuple(batch.shape)}", forward, "s"),
        (f"GPT-2 small, {new_tokens} tokens of greedy generation", generation, "s"),
    ]:
        times = {name: [] for name in contenders}
        outputs = {}
        with torch.no_grad():
            for _ in range(repeats):
                for name, run in contenders.items():
                    start = time.perf_counter()
                    outputs[name] = run()
                    times[name].append(time.perf_counter() - start)
        medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        baseline = medians[list(contenders)[-1]]
        print(f"{title}, median of {repeats}, {torch.get_num_threads()} threads:")
        for name, seconds in medians.items():
            print(
                f"  {name:<34}{seconds:8.3f} {unit}  {baseline / seconds:5.2f}x HuggingFace's speed"
            )
        values = list(outputs.values())
        if isinstance(values[0], list):
            same = all(v == values[0] for v in values)
        else:
            same = all((v - values[0]).abs().max().item() < 1e-3 for v in values)
        print(f"  all agree: {same}")
        results[title] = medians
    return results


def _huggingface_gpt2(cfg):
    """GPT2LMHeadModel with the reference's shape: untied unembedding, no dropout."""
    from transformers import GPT2LMHeadModel

    from solutions.gpt2 import hf_config

    return GPT2LMHeadModel(hf_config(cfg, tied=False))


SECTIONS = ["checks", "training", "model", "scaling", "gpt2", "speed"]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Time the course's code (make bench).")
    parser.add_argument("sections", nargs="*", help=f"of {', '.join(SECTIONS)}; all when none")
    parser.add_argument("--record", action="store_true", help="rewrite the stored timings")
    parser.add_argument("--nanogpt", metavar="PATH", help="a folder with nanoGPT's model.py")
    parser.add_argument("--threads", type=int, help="CPU threads for the speed section")
    args = parser.parse_args(argv)
    for unknown in set(args.sections) - set(SECTIONS):
        parser.error(f"no section {unknown!r}: choose from {', '.join(SECTIONS)}")
    sections = args.sections or SECTIONS
    if "checks" in sections:
        bench_checks()
    if "training" in sections:
        print()
        bench_training(record=args.record)
    if "model" in sections:
        print()
        bench_model()
    if "scaling" in sections:
        print()
        bench_scaling(record=args.record)
    if "gpt2" in sections:
        print()
        bench_gpt2()
    if "speed" in sections:
        print()
        result = bench_speed(nanogpt=args.nanogpt, threads=args.threads)
        if args.record:
            path = SPEED_TIMES["cpu" if result["device"].startswith("CPU") else "cuda"]
            _record(result, path, "chapter 6b's book page prints")


if __name__ == "__main__":
    main(sys.argv[1:])
