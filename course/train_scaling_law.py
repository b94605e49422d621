"""Chapter 6's scaling law in miniature: train models of several sizes at fixed compute and
write course/data/scaling_law/results.json.

`python -m course.train_scaling_law` (or `make scaling-law`): an IsoFLOP design, as in
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
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from course.config import Config
from course.shipped import setup, train_logged, write_json
from course.train_text_model import text_tokens
from solutions.scaling import (
    approx_params,
    count_training_flops,
    exact_params,
    fit_power_law,
    isoflop_minimum,
)
from solutions.training import TrainConfig, evaluate, fixed_windows
from solutions.transformer import Transformer

OUT = Path(__file__).resolve().parent / "data" / "scaling_law"
RESULTS = OUT / "results.json"

N_LAYERS, D_HEAD, N_CTX = 2, 16, 64
# Compute budgets (FLOPs) and the widths trained at each, chosen to bracket the lowest loss.
BUDGETS = {
    1.5e11: [16, 32, 48, 64],
    4.5e11: [16, 32, 48, 64, 96],
    1.35e12: [32, 48, 64, 96, 128],
}
# Batches of 8 windows (512 bytes): models this small learn more from more, smaller steps
# than from fewer, larger ones (in trial runs with 32 windows, the larger models of a budget
# got so few steps that the smallest model was best at every budget).
SCHEDULE = TrainConfig(
    batch_size=8,
    weight_decay=0.1,
    eval_windows=64,
    patience=0,
    seed=0,
)
# The two best sizes of the smallest budget, again with other seeds (initialisation and
# batches): how far a run's loss moves by chance.
SEED_RUNS = [(1.5e11, 16), (1.5e11, 32)]
SEEDS = [1, 2]
VAL_WINDOWS = 512  # the final loss: 512 windows of 64 bytes, most of the validation split
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
    """Every parameter but W_E, W_pos, W_U and b_U: Kaplan et al.'s N."""
    with torch.device("meta"):
        model = Transformer(cfg)
    return sum(p.numel() for name, p in model.named_parameters() if name not in EMBEDDINGS)


def counted_flops_per_token(cfg: Config) -> float:
    """Chapter 6's exact count (FlopCounterMode, on the meta device) of one token's training."""
    with torch.device("meta"):
        model = Transformer(cfg)
    tokens = torch.zeros(1, cfg.n_ctx, dtype=torch.long, device="meta")
    return count_training_flops(model, tokens) / cfg.n_ctx


def peak_lr(d_model: int) -> float:
    """1e-2 up to d_model 32, then falling as 1/d_model: wider models need smaller steps (the
    rule of muP for Adam), and one rate for all would favour some sizes over others. Set from
    a few trial runs, not tuned per size."""
    return min(1e-2, 0.32 / d_model)


def run_schedule(budget: float, d_model: int) -> TrainConfig:
    """The training of width d_model on the tokens `budget` FLOPs pay for: warm-up over 5%
    of the steps, then a cosine to the last."""
    tokens_per_step = SCHEDULE.batch_size * N_CTX
    steps = round(budget / (counted_flops_per_token(law_config(d_model)) * tokens_per_step))
    lr = peak_lr(d_model)
    return replace(
        SCHEDULE,
        max_steps=steps,
        warmup_steps=max(1, steps // 20),
        eval_every=steps,
        max_lr=lr,
        min_lr=lr / 10,
    )


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


def final_loss(model: Transformer, split: torch.Tensor) -> float:
    """Mean loss (nats per byte) on VAL_WINDOWS fixed windows of a split."""
    return evaluate(model, fixed_windows(split, model.cfg.n_ctx, VAL_WINDOWS))


def load_results(path: Path = RESULTS) -> dict:
    """The shipped sweep: budgets, and per run its config, counts, losses and loss log."""
    return json.loads(path.read_text(encoding="utf-8"))


def law_fits(results: dict) -> dict:
    """What the sweep measures: at each budget the bottom of the IsoFLOP valley (N_opt, its
    loss, the tokens D_opt a model of N_opt parameters gets for the budget, and D_opt / N_opt),
    then power laws through the bottoms: N_opt ∝ C^n_exponent, D_opt ∝ C^d_exponent, and the
    loss ∝ N_opt^-alpha_n and ∝ C^-alpha_c (no irreducible term: three points cannot fix one)."""
    minima = []
    for budget in results["budgets"]:
        runs = [r for r in results["runs"] if r["budget"] == budget]
        n_params = np.array([r["params"] for r in runs], float)
        n_opt, loss_opt = isoflop_minimum(n_params, [r["val_loss"] for r in runs])
        # D falls smoothly with N at a fixed budget (as 1/N, bar attention): interpolated.
        log_d = np.interp(math.log(n_opt), np.log(n_params), [math.log(r["tokens"]) for r in runs])
        d_opt = math.exp(log_d)
        minima.append(
            {
                "budget": budget,
                "n_opt": n_opt,
                "d_opt": d_opt,
                "tokens_per_param": d_opt / n_opt,
                "loss_opt": loss_opt,
                "inside": bool(n_params.min() < n_opt < n_params.max()),
            }
        )
    budgets = [m["budget"] for m in minima]
    n_opt, loss_opt = [m["n_opt"] for m in minima], [m["loss_opt"] for m in minima]
    return {
        "minima": minima,
        "n_exponent": fit_power_law(budgets, n_opt)[0],
        "d_exponent": fit_power_law(budgets, [m["d_opt"] for m in minima])[0],
        "alpha_n": -fit_power_law(n_opt, loss_opt)[0],
        "alpha_c": -fit_power_law(budgets, loss_opt)[0],
    }


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
