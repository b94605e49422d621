"""Chapter 7's text model as shipped in course/data/text_model/ (trained by
`python -m course.models.train_text_model`): its configuration, its data, and its loaders."""

import json
from dataclasses import replace
from pathlib import Path

import torch

from course import DATA
from course.models.shipped import SMALL_TRAINING, load_weights
from solutions.config import Config
from solutions.corpus import load_corpus
from solutions.training import evaluate, fixed_windows
from solutions.transformer import Transformer

OUT = DATA / "text_model"


# Bytes as tokens: d_vocab 256. Small enough to train in minutes on one CPU thread.
TEXT_MODEL = Config(d_model=128, d_vocab=256, n_ctx=64, d_head=32, d_mlp=512, n_heads=4, n_layers=2)
TEXT_TRAINING = replace(SMALL_TRAINING, max_steps=1500)


def text_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """The corpus as bytes, split 90% for training, the last 10% for validation."""
    data = torch.tensor(list(load_corpus().encode("utf-8")))
    cut = len(data) * 9 // 10
    return data[:cut], data[cut:]


def validation_loss(model: Transformer) -> float:
    """Mean loss (nats per byte) on the validation split's fixed evaluation windows."""
    windows = fixed_windows(text_tokens()[1], model.cfg.n_ctx, TEXT_TRAINING.eval_windows)
    return evaluate(model, windows)


def untrained_model(seed: int = TEXT_TRAINING.seed) -> Transformer:
    """The model as training starts: GPT-2's initialisation, seeded."""
    torch.manual_seed(seed)
    return Transformer(TEXT_MODEL).eval()


def load_text_model(out: Path = OUT) -> Transformer:
    """The shipped model, in float32 and eval mode."""
    return load_weights(Transformer(TEXT_MODEL), out / "model.safetensors")


def load_log(out: Path = OUT) -> dict:
    """The shipped log: train_config, log, val_loss (shipped weights) and untrained_val_loss."""
    return json.loads((out / "log.json").read_text(encoding="utf-8"))
