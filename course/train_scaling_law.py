"""Chapter 6's scaling law in miniature: train models of several sizes at fixed compute and
write course/data/scaling_law/results.json.

`python -m course.train_scaling_law` (or `make scaling-law`): an IsoFLOP design, as in
Hoffmann et al. (2022). For each compute budget C, models of several widths (the course's
Transformer, 2 layers, heads of 16 dimensions, d_mlp = 4·d_model, bytes as tokens as in
chapter 7's text model) are each trained on D = C / (6·N) tokens, N the non-embedding
parameter count (Kaplan et al.'s convention), with the same schedule shape: a warm-up over
the first 5% of the steps, then a cosine down to a tenth of the peak at the last step. So
each run is a complete run at its own length, and the only question is how a budget is best
split between N and D. Seeded, on the CPU with one thread, in under 10 minutes. Written: each
run's configuration, parameter counts, tokens, FLOPs (6·N·D, and chapter 6's exact count),
its training loss at every step, and its final loss on the validation split's fixed windows.
"""

import argparse
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from course.config import Config
from course.shipped import setup, train_logged, write_json
from course.train_text_model import text_tokens
from solutions.scaling import count_training_flops, exact_params
from solutions.training import TrainConfig, evaluate, fixed_windows
from solutions.transformer import Transformer

OUT = Path(__file__).resolve().parent / "data" / "scaling_law"
RESULTS = OUT / "results.json"

N_LAYERS, D_HEAD, N_CTX = 2, 16, 64
# Compute budgets (FLOPs, 6·N·D) and the widths trained at each: around the optimum that
# Chinchilla's 20 tokens per parameter predicts, from far too small to far too large.
BUDGETS = {4e11: [32, 48, 64, 96], 1e12: [32, 48, 64, 96, 128], 2.5e12: [48, 64, 96, 128]}
SCHEDULE = TrainConfig(
    batch_size=32,
    max_lr=3e-3,
    min_lr=3e-4,
    weight_decay=0.1,
    eval_windows=64,
    patience=0,
    seed=0,
)
VAL_WINDOWS = 512  # the final loss: 512 windows of 64 bytes, most of the validation split
# Embeddings (Kaplan et al. leave them out of N: in small models they are a large share of
# the parameters and a small share of the compute, and with them the power law bends).
EMBEDDINGS = ("embed.W_E", "pos_embed.W_pos", "unembed.W_U", "unembed.b_U")


def law_config(d_model: int) -> Config:
    """The model of width d_model: 2 layers, heads of 16, d_mlp = 4·d_model, bytes."""
    return Config(
        d_model=d_model,
        d_vocab=256,
        n_ctx=N_CTX,
        d_head=D_HEAD,
        d_mlp=4 * d_model,
        n_heads=d_model // D_HEAD,
        n_layers=N_LAYERS,
    )


def non_embedding_params(cfg: Config) -> int:
    """Every parameter but W_E, W_pos, W_U and b_U: the N of the fits."""
    with torch.device("meta"):
        model = Transformer(cfg)
    return sum(p.numel() for name, p in model.named_parameters() if name not in EMBEDDINGS)


def counted_flops_per_token(cfg: Config) -> float:
    """Chapter 6's exact count (FlopCounterMode, on the meta device) of one token's training."""
    with torch.device("meta"):
        model = Transformer(cfg)
    tokens = torch.zeros(1, cfg.n_ctx, dtype=torch.long, device="meta")
    return count_training_flops(model, tokens) / cfg.n_ctx


def run_schedule(budget: float, d_model: int) -> TrainConfig:
    """The training of width d_model on budget / (6·N) tokens, warm-up 5%, then a cosine."""
    n = non_embedding_params(law_config(d_model))
    steps = round(budget / (6 * n * SCHEDULE.batch_size * N_CTX))
    return replace(SCHEDULE, max_steps=steps, warmup_steps=max(1, steps // 20), eval_every=steps)


def train_run(
    budget: float, d_model: int, progress: bool = False, stop_at: int | None = None
) -> tuple[Transformer, list[dict]]:
    """One run of the sweep, seeded: the trained model and its loss log. `stop_at` ends it
    early, on the full run's schedule (the tests retrain the first steps)."""
    tcfg = run_schedule(budget, d_model)
    setup(tcfg.seed)
    model = Transformer(law_config(d_model), fused=True)
    log = train_logged(model, *text_tokens(), tcfg, progress, stop_at)
    return model.eval(), log


def final_loss(model: Transformer, split: torch.Tensor) -> float:
    """Mean loss (nats per byte) on VAL_WINDOWS fixed windows of a split."""
    return evaluate(model, fixed_windows(split, model.cfg.n_ctx, VAL_WINDOWS))


def load_results(path: Path = RESULTS) -> dict:
    """The shipped sweep: budgets, and per run its config, counts, losses and loss log."""
    return json.loads(path.read_text(encoding="utf-8"))


def main(out: Path = OUT, scale: float = 1.0) -> None:
    start = time.process_time()
    train_bytes, val_bytes = text_tokens()
    runs = []
    for budget, widths in BUDGETS.items():
        for d_model in widths:
            cfg = law_config(d_model)
            t0 = time.process_time()
            model, log = train_run(budget * scale, d_model)
            tcfg = run_schedule(budget * scale, d_model)
            n, tokens = non_embedding_params(cfg), tcfg.max_steps * tcfg.batch_size * N_CTX
            run = {
                "budget": budget * scale,
                "d_model": d_model,
                "config": asdict(cfg),
                "train_config": asdict(tcfg),
                "params_non_embedding": n,
                "params_total": exact_params(cfg),
                "tokens": tokens,
                "epochs": tokens / len(train_bytes),
                "flops_6nd": 6 * n * tokens,
                "flops_6nd_total": 6 * exact_params(cfg) * tokens,
                "flops_counted": counted_flops_per_token(cfg) * tokens,
                "val_loss": final_loss(model, val_bytes),
                "train_eval_loss": final_loss(model, train_bytes),
                "cpu_s": round(time.process_time() - t0, 1),
                "train_loss": [round(row["train_loss"], 4) for row in log],
            }
            runs.append(run)
            print(
                f"C {run['budget']:.2g}, d_model {d_model:>3}: N {n:>7,}, {tcfg.max_steps:>5} "
                f"steps, {run['epochs']:.1f} epochs, val {run['val_loss']:.3f}, "
                f"{run['cpu_s']:.0f} s",
                flush=True,
            )
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "budgets": [b * scale for b in BUDGETS],
        "train_bytes": len(train_bytes),
        "val_bytes": len(val_bytes),
        "val_windows": VAL_WINDOWS,
        "uniform_loss": math.log(256),
        "cpu_s": round(time.process_time() - start, 1),
        "runs": runs,
    }
    write_json(results, out / "results.json")
    print(f"wrote {out} in {results['cpu_s']:.0f} s of CPU time")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--scale", type=float, default=1.0, help="budgets × this: a quick trial")
    args = parser.parse_args()
    main(args.out, args.scale)
