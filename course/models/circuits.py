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


# The chapter's test sequences: [bos, s, s], s of HALF random tokens, fixed by their seed.
HALF = 20
EVAL_BATCH, EVAL_SEED = 100, 1234


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


@torch.no_grad()
def induction_eval(model: AttnOnlyTransformer, tokens: torch.Tensor) -> dict:
    """Loss on each half of [bos, s, s], and the heads' scores."""
    log_probs = next_token_log_probs(model(tokens), tokens)
    patterns = attention_patterns(model, tokens)
    return {
        "first_half_loss": -log_probs[:, :HALF].mean().item(),
        "second_half_loss": -log_probs[:, HALF:].mean().item(),
        "prev_token_score": prev_token_score(patterns[0]).tolist(),
        "induction_score": induction_score(patterns[1], HALF).tolist(),
    }


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
