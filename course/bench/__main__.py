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
speed_gpu.json), which chapter 6b prints. `python -m course.bench checks`, `training`,
`model`, `scaling`, `gpt2` or `speed` runs one section (several may be named).
"""

import argparse
import sys

from course.bench.checks import bench_checks
from course.bench.model import bench_gpt2, bench_model
from course.bench.records import SPEED_TIMES, store
from course.bench.scaling import bench_scaling
from course.bench.speed import bench_speed
from course.bench.tokenizer import bench_training


def speed(args: argparse.Namespace) -> None:
    result = bench_speed(nanogpt=args.nanogpt, threads=args.threads)
    if args.record:
        path = SPEED_TIMES["cpu" if result["device"].startswith("CPU") else "cuda"]
        store(result, path, "chapter 6b's book page prints")


# Each section by name, in the order a run takes them whatever order they are named in.
SECTIONS = {
    "checks": lambda args: bench_checks(),
    "training": lambda args: bench_training(record=args.record),
    "model": lambda args: bench_model(),
    "scaling": lambda args: bench_scaling(record=args.record),
    "gpt2": lambda args: bench_gpt2(),
    "speed": speed,
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Time the course's code (make bench).")
    parser.add_argument("sections", nargs="*", help=f"of {', '.join(SECTIONS)}; all when none")
    parser.add_argument("--record", action="store_true", help="rewrite the stored timings")
    parser.add_argument("--nanogpt", metavar="PATH", help="a folder with nanoGPT's model.py")
    parser.add_argument("--threads", type=int, help="CPU threads for the speed section")
    args = parser.parse_args(argv)
    for unknown in set(args.sections) - set(SECTIONS):
        parser.error(f"no section {unknown!r}: choose from {', '.join(SECTIONS)}")
    chosen = [name for name in SECTIONS if name in (args.sections or SECTIONS)]
    for i, name in enumerate(chosen):
        if i:
            print()
        SECTIONS[name](args)


if __name__ == "__main__":
    main(sys.argv[1:])
