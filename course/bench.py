"""Time the course's code: `python -m course.bench` (or `make bench`).

Three sections. Checks: every checker on its reference solution; a check should answer in about
a second on a 2-core laptop CPU, and slower ones are flagged. Training: chapter 1's two BPE
trainers side by side on the whole corpus, written to course/data/bpe_train_times.json, which
the chapter quotes when run with `--record` (a plain run only prints, so it never leaves the
stored chapter out of date). Model: training throughput of the reference GPT-2 at the
course-model config, explicit softmax and fused attention side by side.
`python -m course.bench checks`, `training` or `model` runs one section.
"""

import contextlib
import importlib
import io
import json
import os
import pkgutil
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import checks
from checks._core import _EXERCISES
from course.corpus import load_corpus

BUDGET_S = 1.5
TRAIN_VOCAB_SIZE = 4096
TRAIN_TIMES = Path(__file__).parent / "data" / "bpe_train_times.json"


def bench_checks() -> None:
    for module in pkgutil.iter_modules(checks.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"checks.{module.name}")
    rows = []
    for chapter, exercises in _EXERCISES.items():
        for ex in exercises:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                ex.checker(ex.reference)
            rows.append((time.perf_counter() - start, chapter, ex.name))
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
        TRAIN_TIMES.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(
            f"written to course/data/{TRAIN_TIMES.name}, which chapter 1 prints: refresh its "
            "solved notebook with `python -m course.notebooks build 01_embeddings --force`"
        )
    return result


def bench_model(steps: int = 8) -> dict:
    """Training tokens per second at COURSE_MODEL (batch of COURSE_TRAINING), both attentions.

    Each figure is the median wall time of `steps` optimizer steps after one warm-up step, on
    random tokens (the speed does not depend on the text), with the threads the course model
    trains with. Wall time, as a training run feels it: other programs on the machine slow it.
    """
    import torch

    from course.config import COURSE_MODEL
    from course.train_course_model import COURSE_TRAINING
    from solutions.training import param_groups, window_loss
    from solutions.transformer import Transformer

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg, batch = COURSE_MODEL, COURSE_TRAINING.batch_size
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, cfg.d_vocab, (steps + 1, batch, cfg.n_ctx + 1), generator=g)
    result = {}
    for name, fast in [("explicit softmax", False), ("F.scaled_dot_product_attention", True)]:
        torch.manual_seed(0)
        model = Transformer(cfg, fast_attention=fast)
        optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
        times = []
        for w in windows:
            start = time.perf_counter()
            loss = window_loss(model, w)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        step_s = sorted(times[1:])[len(times[1:]) // 2]
        result[name] = batch * cfg.n_ctx / step_s
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"Training throughput at COURSE_MODEL ({n_params / 1e6:.2f}M parameters, batch {batch} "
        f"x {cfg.n_ctx} tokens, {torch.get_num_threads()} threads), median of {steps} steps:"
    )
    for name, tokens_per_s in result.items():
        print(f"  {name:<34}{tokens_per_s:8,.0f} tokens/s")
    return result


def main(argv: list[str]) -> None:
    record = "--record" in argv
    sections = [a for a in argv if a != "--record"] or ["checks", "training", "model"]
    if "checks" in sections:
        bench_checks()
    if "training" in sections:
        print()
        bench_training(record=record)
    if "model" in sections:
        print()
        bench_model()


if __name__ == "__main__":
    main(sys.argv[1:])
