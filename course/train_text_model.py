"""Train chapter 7's text model and write it to course/data/text_model/.

`python -m course.train_text_model` (or `make text-model`): a two-layer GPT-2 (the course's
Transformer, MLPs and LayerNorms included) whose tokens are the bytes of the offline corpus
(course.corpus), so it needs no tokenizer, trained by chapter 6b's loop
(solutions.training.train). Seeded, on the CPU with one thread, in a few minutes. Written:
the weights (safetensors, rounded to float16: the shipped model is the rounded one) and
log.json (the training configuration, the loss log, and the validation loss of the shipped
weights and of an untrained model).
"""

import argparse
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

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
from solutions.training import TrainConfig, evaluate, fixed_windows
from solutions.transformer import Transformer

OUT = Path(__file__).resolve().parent / "data" / "text_model"

# Bytes as tokens: d_vocab 256. Small enough to train in minutes on one CPU thread.
TEXT_MODEL = Config(d_model=128, d_vocab=256, n_ctx=64, d_head=32, d_mlp=512, n_heads=4, n_layers=2)
TEXT_TRAINING = TrainConfig(
    batch_size=32,
    max_steps=1500,
    max_lr=3e-3,
    min_lr=3e-4,
    warmup_steps=50,
    weight_decay=0.1,
    eval_every=100,
    eval_windows=64,
    patience=0,
    seed=0,
)


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


def train_text_model(
    tcfg: TrainConfig = TEXT_TRAINING, progress: bool = True
) -> tuple[Transformer, list[dict]]:
    """The model trained by chapter 6b's loop, rounded as shipped; and its loss log."""
    setup(tcfg.seed)
    model = Transformer(TEXT_MODEL)
    log = train_logged(model, *text_tokens(), tcfg, progress)
    return round_to_float16(model), log


def load_text_model(out: Path = OUT) -> Transformer:
    """The shipped model, in float32 and eval mode."""
    return load_weights(Transformer(TEXT_MODEL), out / "model.safetensors")


def load_log(out: Path = OUT) -> dict:
    """The shipped log: train_config, log, val_loss (shipped weights) and untrained_val_loss."""
    return json.loads((out / "log.json").read_text(encoding="utf-8"))


def main(out: Path = OUT, steps: int | None = None) -> None:
    start = time.perf_counter()
    tcfg = replace(TEXT_TRAINING, max_steps=steps or TEXT_TRAINING.max_steps)
    model, log = train_text_model(tcfg)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors")
    summary = {
        "train_config": asdict(tcfg),
        "val_loss": validation_loss(load_text_model(out)),
        "untrained_val_loss": validation_loss(untrained_model()),
        "uniform_loss": math.log(TEXT_MODEL.d_vocab),
        "log": log,
    }
    write_json(summary, out / "log.json")
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s: val loss {summary['val_loss']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, help="a quick trial run")
    args = parser.parse_args()
    main(args.out, args.steps)
