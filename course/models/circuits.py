"""Chapter 5b's two attention-only models as shipped in course/data/circuits/ (trained by
`python -m course.models.train_circuits`): their training recipes, data, evaluation, scores
and loaders."""

import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import torch

from course import DATA
from course.models.shipped import SMALL_TRAINING, load_weights
from solutions.circuits import (
    CORPUS_MODEL,
    INDUCTION_MODEL,
    AttnOnlyTransformer,
    attention_patterns,
    composition_baseline,
    composition_scores,
    induction_score,
    prev_token_score,
    repeated_tokens,
)
from solutions.config import Config
from solutions.corpus import load_corpus
from solutions.embeddings import next_token_log_probs
from solutions.tokenizer import BPETokenizer, train_incremental

OUT = DATA / "circuits"


CORPUS_TRAINING = replace(SMALL_TRAINING, max_steps=600, max_lr=1e-2, min_lr=1e-3)


# Repeats of random tokens, with a period from 6 to 20 per sequence (periodic_tokens). Weight
# decay (SMALL_TRAINING's 0.1) prunes the directions a head does not use: its heads
# specialise sooner.
INDUCTION_TRAINING = replace(
    SMALL_TRAINING, max_steps=1500, max_lr=1e-2, min_lr=1e-3, eval_every=50
)


PERIODS = (6, 20)


@cache
def corpus_tokenizer(vocab_size: int = CORPUS_MODEL.d_vocab) -> BPETokenizer:
    """The BPE of the corpus model: learned from the whole corpus (under a second)."""
    return BPETokenizer(train_incremental(load_corpus(), vocab_size))


def corpus_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """The corpus as token ids, split 90% for training, the last 10% for validation."""
    tokens = torch.tensor(corpus_tokenizer().encode(load_corpus()))
    cut = len(tokens) * 9 // 10
    return tokens[:cut], tokens[cut:]


# The chapter's test sequences: [bos, s, s], s of `half` random tokens, for every period the
# model trained on. At the longest (20) the repeat starts where the context ends, so its first
# token is predictable from the position alone: scores are averaged over all of them, and the
# loss on the repeat leaves its first token out (no content says that the repeat begins).
HALVES = tuple(range(PERIODS[0], PERIODS[1] + 1))
HALF = 12  # the period the chapter's figures show, inside the range
EVAL_BATCH, EVAL_SEED = 100, 1234


def induction_eval_tokens(half: int = HALF, cfg: Config = INDUCTION_MODEL) -> torch.Tensor:
    """EVAL_BATCH sequences [bos, s, s] with s of `half` tokens: the same ones at every call."""
    generator = torch.Generator().manual_seed(EVAL_SEED + half)
    return repeated_tokens(EVAL_BATCH, half, cfg.d_vocab, generator)


def induction_eval_sets(cfg: Config = INDUCTION_MODEL) -> dict[int, torch.Tensor]:
    """The test sequences of every half in HALVES."""
    return {half: induction_eval_tokens(half, cfg) for half in HALVES}


@torch.no_grad()
def copy_losses(model: AttnOnlyTransformer, tokens: torch.Tensor) -> tuple[float, float]:
    """Mean loss on the first copy of [bos, s, s], and on the repeat after its first token."""
    half = tokens.shape[1] // 2
    losses = -next_token_log_probs(model(tokens), tokens)  # [:, j] predicts token j + 1
    return losses[:, :half].mean().item(), losses[:, half + 1 :].mean().item()


@torch.no_grad()
def induction_eval(model: AttnOnlyTransformer, sets: dict[int, torch.Tensor]) -> dict:
    """Losses on each copy and the heads' scores, averaged over the halves of `sets`."""
    rows = []
    for half, tokens in sets.items():
        first, repeat = copy_losses(model, tokens)
        patterns = attention_patterns(model, tokens)
        prev, induction = prev_token_score(patterns[0]), induction_score(patterns[1], half)
        rows.append(torch.tensor([first, repeat, *prev.tolist(), *induction.tolist()]))
    mean = torch.stack(rows).mean(0).tolist()
    n_heads = model.cfg.n_heads
    return {
        "first_half_loss": mean[0],
        "second_half_loss": mean[1],
        "prev_token_score": mean[2 : 2 + n_heads],
        "induction_score": mean[2 + n_heads :],
    }


@torch.no_grad()
def scores(corpus_model: AttnOnlyTransformer, induction_model: AttnOnlyTransformer) -> dict:
    """What the chapter quotes of the shipped models, computed from their shipped weights."""
    composition = {kind: composition_scores(induction_model, kind).tolist() for kind in "QKV"}
    baseline = {kind: composition_baseline(INDUCTION_MODEL, kind) for kind in "QKV"}
    return {
        "induction": induction_eval(induction_model, induction_eval_sets()),
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
