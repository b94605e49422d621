"""Chapter 6's scaling-law sweep, as shipped in course/data/scaling_law/results.json (trained
by `python -m course.models.train_scaling_law`): its design (models, budgets, schedules), the
counts it is measured in, and what its results fit."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from course import DATA
from course.models.shipped import SMALL_TRAINING
from solutions.config import Config
from solutions.scaling import count_training_flops, fit_power_law, isoflop_minimum
from solutions.training import TrainConfig, evaluate, fixed_windows
from solutions.transformer import Transformer

OUT = DATA / "scaling_law"


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
# got so few steps that the smallest model was best at every budget). The length, warm-up,
# evaluation and learning rates are each run's own (run_schedule).
SCHEDULE = replace(SMALL_TRAINING, batch_size=8)


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


def final_loss(model: Transformer, split: torch.Tensor) -> float:
    """Mean loss (nats per byte) on VAL_WINDOWS fixed windows of a split."""
    return evaluate(model, fixed_windows(split, model.cfg.n_ctx, VAL_WINDOWS))


def load_results(path: Path = RESULTS) -> dict:
    """The shipped sweep: budgets, and per run its config, counts, losses and loss log."""
    return json.loads(path.read_text(encoding="utf-8"))


# The three ways of counting N that the runs record: Chinchilla's (every parameter), the
# course's (approx_params, the fits' N) and Kaplan's (no embeddings, no unembedding).
COUNTS = {"total": "params_total", "course": "params", "non-embedding": "params_non_embedding"}


def law_fits(results: dict, count: str = "params") -> dict:
    """What the sweep measures: at each budget the bottom of the IsoFLOP valley (N_opt, its
    loss, the tokens D_opt a model of N_opt parameters gets for the budget, and D_opt / N_opt),
    then power laws through the bottoms: N_opt ∝ C^n_exponent, D_opt ∝ C^d_exponent, and the
    loss ∝ N_opt^-alpha_n and ∝ C^-alpha_c (no irreducible term: three points cannot fix one).
    `count` is the runs' key for N (one of COUNTS' values)."""
    minima = []
    for budget in results["budgets"]:
        runs = [r for r in results["runs"] if r["budget"] == budget]
        n_params = np.array([r[count] for r in runs], float)
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


def seed_noise(results: dict) -> float:
    """The standard deviation of a run's validation loss over seeds, pooled over the sizes
    trained again with other seeds (SEED_RUNS: 3 seeds each, 2 degrees of freedom a size)."""
    squares, dof = 0.0, 0
    for budget, d_model in sorted({(r["budget"], r["d_model"]) for r in results["seed_runs"]}):
        losses = [
            r["val_loss"]
            for r in results["runs"] + results["seed_runs"]
            if (r["budget"], r["d_model"]) == (budget, d_model)
        ]
        squares += float(np.sum((np.array(losses) - np.mean(losses)) ** 2))
        dof += len(losses) - 1
    return math.sqrt(squares / dof)


def refit_exponents(
    results: dict, noise: float, draws: int = 100_000, seed: int = 0, count: str = "params"
) -> np.ndarray:
    """The exponent of N_opt ∝ C^a, refitted `draws` times with every run's loss moved by
    Gaussian noise of standard deviation `noise` (seeded): how far seed noise alone moves it.
    Draws in which a budget's parabola has no bottom (it opens downwards) are left out."""
    runs = results["runs"]
    rng = np.random.default_rng(seed)
    moved = rng.normal(0, noise, (len(runs), draws))
    losses = np.array([r["val_loss"] for r in runs])[:, None] + moved  # [run, draw]
    log_n_opt, valley = [], np.ones(draws, bool)
    for budget in results["budgets"]:
        rows = [i for i, r in enumerate(runs) if r["budget"] == budget]
        # One least-squares parabola per column (draw), in x = log N.
        a, b, _ = np.polyfit(np.log([runs[i][count] for i in rows]), losses[rows], 2)
        valley &= a > 0
        log_n_opt.append(-b / (2 * a))
    slopes = np.polyfit(np.log(results["budgets"]), np.array(log_n_opt), 1)[0]
    return slopes[valley]
