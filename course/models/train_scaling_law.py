"""Chapter 6's scaling law in miniature: train models of several sizes at fixed compute and
write course/data/scaling_law/results.json.

`python -m course.models.train_scaling_law` (or `make scaling-law`): an IsoFLOP design, as in
Hoffmann et al. (2022). For each compute budget C, models of several widths (the course's
Transformer, 2 layers, heads of 16 dimensions (one head at d_model 16), d_mlp = 4·d_model,
bytes as tokens as in chapter 7's text model) are each trained on as many tokens D as the
budget pays for, counted as chapter 6 counts a training step's FLOPs (FlopCounterMode: the
6·N·D of the matrix products and attention's own products). Every run has the same schedule
shape: a warm-up over the first 5% of its steps, then a cosine down to a tenth of the peak at
its last step, so each is a complete run at its own length; the peak learning rate falls
with the width (peak_lr). Seeded, on the CPU with one
thread, in under 10 minutes. Written: each run's configuration, parameter counts, tokens,
FLOPs, its training loss at every step, and its final loss on the validation split's fixed
windows.
"""

import argparse
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

from course.models.scaling_law import (
    BUDGETS,
    N_CTX,
    OUT,
    SCHEDULE,
    SEED_RUNS,
    SEEDS,
    VAL_WINDOWS,
    counted_flops_per_token,
    final_loss,
    law_config,
    non_embedding_params,
    run_schedule,
)
from course.models.shipped import setup, train_logged, write_json
from course.models.text_model import text_tokens
from solutions.scaling import approx_params, exact_params
from solutions.transformer import Transformer


def train_run(
    budget: float,
    d_model: int,
    progress: bool = False,
    stop_at: int | None = None,
    seed: int = SCHEDULE.seed,
) -> tuple[Transformer, list[dict]]:
    """One run of the sweep, seeded: the trained model and its loss log. `stop_at` ends it
    early, on the full run's schedule (the tests retrain the first steps)."""
    tcfg = replace(run_schedule(budget, d_model), seed=seed)
    setup(tcfg.seed)
    model = Transformer(law_config(d_model), fused=True)
    log = train_logged(model, *text_tokens(), tcfg, progress, stop_at)
    return model.eval(), log


def logged_losses(losses: list[float], first: int = 50, every: int = 10) -> dict:
    """The loss log as shipped, to 4 decimals: the first steps one by one, then the mean of
    each `every` steps (the whole log, step by step, would weigh more than the rest)."""
    losses = [round(x, 4) for x in losses]
    means = [losses[i : i + every] for i in range(0, len(losses), every)]
    return {
        "first_train_loss": losses[:first],
        "train_loss_every": every,
        "train_loss": [round(sum(chunk) / len(chunk), 4) for chunk in means],
    }


def seed_runs(scale: float = 1.0) -> list[dict]:
    """SEED_RUNS trained with each of SEEDS: their final validation loss."""
    rows = []
    for budget, d_model in SEED_RUNS:
        for seed in SEEDS:
            t0 = time.process_time()
            model, log = train_run(budget * scale, d_model, seed=seed)
            rows.append(
                {
                    "budget": budget * scale,
                    "d_model": d_model,
                    "seed": seed,
                    "val_loss": final_loss(model, text_tokens()[1]),
                    "cpu_s": round(time.process_time() - t0, 1),
                    "first_train_loss": logged_losses([r["train_loss"] for r in log])[
                        "first_train_loss"
                    ],
                }
            )
            print(
                f"C {budget * scale:.3g}, d_model {d_model:>3}, seed {seed}: "
                f"val {rows[-1]['val_loss']:.3f}",
                flush=True,
            )
    return rows


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
            n, tokens = approx_params(cfg), tcfg.max_steps * tcfg.batch_size * N_CTX
            run = {
                "budget": budget * scale,
                "d_model": d_model,
                "config": asdict(cfg),
                "train_config": asdict(tcfg),
                "params": n,
                "params_non_embedding": non_embedding_params(cfg),
                "params_total": exact_params(cfg),
                "tokens": tokens,
                "epochs": tokens / len(train_bytes),
                "flops": counted_flops_per_token(cfg) * tokens,
                "flops_6nd": 6 * n * tokens,
                "val_loss": final_loss(model, val_bytes),
                "train_eval_loss": final_loss(model, train_bytes),
                "cpu_s": round(time.process_time() - t0, 1),
                **logged_losses([row["train_loss"] for row in log]),
            }
            runs.append(run)
            print(
                f"C {run['budget']:.3g}, d_model {d_model:>3}: N {n:>7,}, {tcfg.max_steps:>5} "
                f"steps, {run['epochs']:.1f} epochs, val {run['val_loss']:.3f}, "
                f"{run['cpu_s']:.0f} s",
                flush=True,
            )
    seeds = seed_runs(scale)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "budgets": [b * scale for b in BUDGETS],
        "train_bytes": len(train_bytes),
        "val_bytes": len(val_bytes),
        "val_windows": VAL_WINDOWS,
        "uniform_loss": math.log(256),
        "cpu_s": round(time.process_time() - start, 1),
        "runs": runs,
        "seed_runs": seeds,
    }
    write_json(results, out / "results.json")
    print(f"wrote {out} in {results['cpu_s']:.0f} s of CPU time")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plan", action="store_true", help="print the runs' steps, train none")
    parser.add_argument("--scale", type=float, default=1.0, help="budgets × this: a quick trial")
    args = parser.parse_args()
    if args.plan:
        for budget, widths in BUDGETS.items():
            for d_model in widths:
                print(f"C {budget:.3g}, d_model {d_model}: {run_schedule(budget, d_model)}")
    else:
        main(args.out, args.scale)
