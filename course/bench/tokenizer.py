"""Chapter 1's two BPE trainers side by side on the whole corpus (`python -m course.bench
training`); `--record` writes course/data/bpe_train_times.json, which the chapter quotes."""

import os
import platform
import time
from datetime import UTC, datetime

from course.bench.records import TRAIN_TIMES, store
from solutions.corpus import load_corpus

TRAIN_VOCAB_SIZE = 4096


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
        store(result, TRAIN_TIMES, "chapter 1 prints", "01_embeddings")
    return result
