"""Chapter 6's measured costs (`python -m course.bench scaling`): attention time against context
length, matmul throughput against width; `--record` writes course/data/scaling_times.json."""

import os
import platform
import time
from datetime import UTC, datetime

from course.bench.records import SCALING_TIMES, store


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
        store(result, SCALING_TIMES, "chapter 6 plots", "06_scaling")
    return result
