"""Train chapter 5's two attention-only models and write them to course/data/circuits/.

`python -m course.models.train_circuits` (or `make circuits`): a one-layer model of the offline
corpus (solutions.corpus), tokenised by a BPE of 1024 tokens trained on it, trained with
solutions.training's loop; and a two-layer model of repeating random tokens, which learns
induction heads. Both are seeded and run on the CPU with one thread, in under two minutes
together. Written: each model's weights (safetensors, rounded to float16: the shipped model
is the rounded one), its loss log and the scores the chapter quotes (json).
"""

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from course.models.circuits import (
    CORPUS_TRAINING,
    INDUCTION_TRAINING,
    OUT,
    PERIODS,
    corpus_tokens,
    induction_eval,
    induction_eval_sets,
    load_model,
    scores,
)
from course.models.shipped import round_to_float16, save_weights, setup, train_logged, write_json
from solutions.circuits import CORPUS_MODEL, INDUCTION_MODEL, AttnOnlyTransformer, periodic_tokens
from solutions.training import TrainConfig, clip_grad_norm, learning_rate, param_groups
from solutions.transformer import lm_loss


def train_corpus_model(
    tcfg: TrainConfig = CORPUS_TRAINING, progress: bool = True
) -> tuple[AttnOnlyTransformer, list[dict]]:
    """The one-layer model, trained by solutions.training.train; and its loss log."""
    setup(tcfg.seed)
    train_tokens, val_tokens = corpus_tokens()
    model = AttnOnlyTransformer(CORPUS_MODEL)
    log = train_logged(model, train_tokens, val_tokens, tcfg, progress)
    return round_to_float16(model), log


def train_induction_model(
    tcfg: TrainConfig = INDUCTION_TRAINING, progress: bool = True
) -> tuple[AttnOnlyTransformer, list[dict]]:
    """The two-layer model on fresh repeating sequences at every step; and its log.

    Chapter 6b's schedule, decay groups, loss and clipping, stepped here rather than by
    train_step: a batch is n_ctx tokens, all read, where train_step's windows are n_ctx + 1
    with the last only a target; and torch.optim.AdamW, whose running mean (a lerp) rounds
    differently from chapter 6b's AdamW. Either change would make a run differ in its last
    bits from the one that made the shipped weights, and drift from it as training goes on.
    """
    setup(tcfg.seed)
    cfg = INDUCTION_MODEL
    model = AttnOnlyTransformer(cfg)
    optimizer = torch.optim.AdamW(
        param_groups(model, tcfg.weight_decay), lr=tcfg.max_lr, betas=tcfg.betas
    )
    generator = torch.Generator().manual_seed(tcfg.seed)
    eval_sets, log = induction_eval_sets(cfg), []
    for step in tqdm(range(tcfg.max_steps), disable=not progress, desc="induction model"):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, tcfg)
        tokens = periodic_tokens(tcfg.batch_size, cfg.n_ctx, cfg.d_vocab, generator, PERIODS)
        loss = lm_loss(model(tokens), tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        row = {"step": step + 1, "train_loss": loss.item()}
        if (step + 1) % tcfg.eval_every == 0 or step == 0:
            row |= induction_eval(model, eval_sets)
        log.append(row)
    return round_to_float16(model), log


def main(out: Path = OUT, corpus_steps: int | None = None, induction_steps: int | None = None):
    start = time.perf_counter()
    corpus_tcfg = replace(CORPUS_TRAINING, max_steps=corpus_steps or CORPUS_TRAINING.max_steps)
    induction_tcfg = replace(
        INDUCTION_TRAINING, max_steps=induction_steps or INDUCTION_TRAINING.max_steps
    )
    corpus_model, corpus_log = train_corpus_model(corpus_tcfg)
    induction_model, induction_log = train_induction_model(induction_tcfg)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(corpus_model, out / "corpus.safetensors")
    save_weights(induction_model, out / "induction.safetensors")
    write_json({"train_config": asdict(corpus_tcfg), "log": corpus_log}, out / "corpus_log.json")
    write_json(
        {"train_config": asdict(induction_tcfg), "periods": PERIODS, "log": induction_log},
        out / "induction_log.json",
    )
    write_json(scores(load_model("corpus", out), load_model("induction", out)), out / "scores.json")
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--corpus-steps", type=int, help="a quick trial run")
    parser.add_argument("--induction-steps", type=int, help="a quick trial run")
    args = parser.parse_args()
    main(args.out, args.corpus_steps, args.induction_steps)
