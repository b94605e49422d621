"""Train chapter 5's two attention-only models and write them to course/data/circuits/.

`python -m course.train_circuits` (or `make circuits`): a one-layer model of the offline
corpus (course.corpus), tokenised by a BPE of 1024 tokens trained on it, trained with
solutions.training's loop; and a two-layer model of repeating random tokens, which learns
induction heads. Both are seeded and run on the CPU with one thread, in under two minutes
together. Written: each model's weights (safetensors, rounded to float16: the shipped model
is the rounded one), its loss log and the scores the chapter quotes (json).
"""

import argparse
import json
import time
from dataclasses import asdict, replace
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course.config import Config
from course.corpus import load_corpus
from course.shipped import (
    load_weights,
    round_to_float16,
    save_weights,
    setup,
    train_logged,
    write_json,
)
from solutions.circuits import (
    CORPUS_MODEL,
    INDUCTION_MODEL,
    AttnOnlyTransformer,
    attention_patterns,
    composition_baseline,
    composition_scores,
    induction_score,
    periodic_tokens,
    prev_token_score,
    repeated_tokens,
)
from solutions.tokenizer import BPETokenizer, train_incremental
from solutions.training import TrainConfig, learning_rate, param_groups

OUT = Path(__file__).resolve().parent / "data" / "circuits"

CORPUS_TRAINING = TrainConfig(
    batch_size=32,
    max_steps=600,
    max_lr=1e-2,
    min_lr=1e-3,
    warmup_steps=50,
    weight_decay=0.1,
    eval_every=100,
    eval_windows=64,
    patience=0,
    seed=0,
)
# Repeats of random tokens, with a period from 6 to 20 per sequence (periodic_tokens).
INDUCTION_TRAINING = TrainConfig(
    batch_size=32,
    max_steps=1500,
    max_lr=1e-2,
    min_lr=1e-3,
    warmup_steps=50,
    # Decay prunes the directions a head does not use: its heads specialise sooner.
    weight_decay=0.1,
    eval_every=50,
    patience=0,
    seed=0,
)
PERIODS = (6, 20)
# The chapter's test sequences: [bos, s, s], s of HALF random tokens, fixed by their seed.
HALF, EVAL_BATCH, EVAL_SEED = 20, 100, 1234


@cache
def corpus_tokenizer(vocab_size: int = CORPUS_MODEL.d_vocab) -> BPETokenizer:
    """The BPE of the corpus model: learned from the whole corpus (under a second)."""
    return BPETokenizer(train_incremental(load_corpus(), vocab_size))


def corpus_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """The corpus as token ids, split 90% for training, the last 10% for validation."""
    tokens = torch.tensor(corpus_tokenizer().encode(load_corpus()))
    cut = len(tokens) * 9 // 10
    return tokens[:cut], tokens[cut:]


def induction_eval_tokens(cfg: Config = INDUCTION_MODEL) -> torch.Tensor:
    """EVAL_BATCH sequences [bos, s, s]: the same ones at every call."""
    return repeated_tokens(EVAL_BATCH, HALF, cfg.d_vocab, torch.Generator().manual_seed(EVAL_SEED))


def train_corpus_model(
    tcfg: TrainConfig = CORPUS_TRAINING, progress: bool = True
) -> tuple[AttnOnlyTransformer, list[dict]]:
    """The one-layer model, trained by solutions.training.train; and its loss log."""
    setup(tcfg.seed)
    train_tokens, val_tokens = corpus_tokens()
    model = AttnOnlyTransformer(CORPUS_MODEL)
    log = train_logged(model, train_tokens, val_tokens, tcfg, progress)
    return round_to_float16(model), log


@torch.no_grad()
def induction_eval(model: AttnOnlyTransformer, tokens: torch.Tensor) -> dict:
    """Loss on each half of [bos, s, s], and the heads' scores."""
    log_probs = model(tokens).log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    patterns = attention_patterns(model, tokens)
    return {
        "first_half_loss": -log_probs[:, :HALF].mean().item(),
        "second_half_loss": -log_probs[:, HALF:].mean().item(),
        "prev_token_score": prev_token_score(patterns[0]).tolist(),
        "induction_score": induction_score(patterns[1], HALF).tolist(),
    }


def train_induction_model(
    tcfg: TrainConfig = INDUCTION_TRAINING, progress: bool = True
) -> tuple[AttnOnlyTransformer, list[dict]]:
    """The two-layer model on fresh repeating sequences at every step; and its log."""
    setup(tcfg.seed)
    cfg = INDUCTION_MODEL
    model = AttnOnlyTransformer(cfg)
    optimizer = torch.optim.AdamW(
        param_groups(model, tcfg.weight_decay), lr=tcfg.max_lr, betas=tcfg.betas
    )
    generator = torch.Generator().manual_seed(tcfg.seed)
    eval_tokens, log = induction_eval_tokens(cfg), []
    for step in tqdm(range(tcfg.max_steps), disable=not progress, desc="induction model"):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, tcfg)
        tokens = periodic_tokens(tcfg.batch_size, cfg.n_ctx, cfg.d_vocab, generator, PERIODS)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        row = {"step": step + 1, "train_loss": loss.item()}
        if (step + 1) % tcfg.eval_every == 0 or step == 0:
            row |= induction_eval(model, eval_tokens)
        log.append(row)
    return round_to_float16(model), log


@torch.no_grad()
def scores(corpus_model: AttnOnlyTransformer, induction_model: AttnOnlyTransformer) -> dict:
    """What the chapter quotes of the shipped models, computed from their shipped weights."""
    tokens = induction_eval_tokens()
    composition = {kind: composition_scores(induction_model, kind).tolist() for kind in "QKV"}
    baseline = {kind: composition_baseline(INDUCTION_MODEL, kind) for kind in "QKV"}
    return {
        "induction": induction_eval(induction_model, tokens),
        "composition": composition,
        "composition_baseline": baseline,
    }


def load_model(name: str, out: Path = OUT) -> AttnOnlyTransformer:
    """A shipped model ("corpus" or "induction"), in float32 and eval mode."""
    cfg = {"corpus": CORPUS_MODEL, "induction": INDUCTION_MODEL}[name]
    return load_weights(AttnOnlyTransformer(cfg), out / f"{name}.safetensors")


def load_json(name: str, out: Path = OUT) -> dict | list:
    """A shipped log ("corpus_log", "induction_log") or the scores ("scores")."""
    return json.loads((out / f"{name}.json").read_text(encoding="utf-8"))


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
