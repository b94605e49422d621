"""Train the course model from scratch and write it to course/data/course_model/.

`python -m course.models.train_course_model` (or `make course-model`): the English corpus
(course.models.english), the course's BPE trained on its training split, the reference GPT-2 at
COURSE_MODEL trained by solutions.training, then the shipped files: model.safetensors,
config.json, tokenizer.json, loss_log.csv and MODEL_CARD.md. Deterministic for a given seed
on a given CPU; it uses a GPU when there is one (and then is not bitwise CPU-equal).
"""

import argparse
import csv
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from course.models import english
from course.models.course_model import COURSE_TRAINING, MODEL_DIR
from course.models.evaluate import write_model_card
from solutions.config import COURSE_MODEL
from solutions.tokenizer import BPETokenizer
from solutions.training import TrainConfig, pick_device, train
from solutions.transformer import Transformer


def machine() -> str:
    """What trained it: the GPU's name, or the CPU and its core count."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}"
    return (
        f"CPU {platform.machine()}, {os.cpu_count()} cores ({torch.get_num_threads()} threads), "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def write_log(path: Path, log: list[dict]) -> None:
    """The loss log as CSV: step, lr, train_loss, and val_loss where it was measured."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "lr", "train_loss", "val_loss"])
        writer.writeheader()
        writer.writerows(log)


def prepare(cfg=COURSE_MODEL) -> tuple[BPETokenizer, torch.Tensor, torch.Tensor]:
    """The course's BPE trained on the training books, and both splits encoded with it."""
    train_docs, val_docs = english.load_documents("train"), english.load_documents("validation")
    tokenizer = english.train_course_tokenizer(vocab_size=cfg.d_vocab)
    return (
        tokenizer,
        english.encode_documents(tokenizer, train_docs),
        english.encode_documents(tokenizer, val_docs),
    )


def train_course_model(
    train_tokens: torch.Tensor,
    val_tokens: torch.Tensor,
    tcfg: TrainConfig = COURSE_TRAINING,
    cfg=COURSE_MODEL,
    stop_at: int | None = None,
    progress: bool = True,
) -> tuple[Transformer, dict]:
    """The model trained by chapter 6b's loop, seeded, on two threads (so that every run makes
    the same reductions), as the explicit model chapters read; and train's summary."""
    torch.manual_seed(tcfg.seed)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.use_deterministic_algorithms(True, warn_only=True)
    # The fused kernels train faster and compute the same function; the shipped weights
    # load into the explicit model that chapters read.
    model = Transformer(cfg, fused=True).to(pick_device())
    # GPT-2 has no unembedding bias: b_U stays at zero, so the model converts to HuggingFace's
    # GPT2LMHeadModel (and opens in TransformerLens) as it is.
    model.unembed.b_U.requires_grad_(False)
    summary = train(model, train_tokens, val_tokens, tcfg, stop_at=stop_at, progress=progress)
    explicit = Transformer(cfg)
    explicit.load_state_dict(model.cpu().state_dict())
    return explicit.eval(), summary


def main(out: Path = MODEL_DIR, tcfg: TrainConfig = COURSE_TRAINING, cfg=COURSE_MODEL) -> dict:
    start = time.perf_counter()
    print(f"training on {machine()} ({pick_device().type})")
    tokenizer, train_tokens, val_tokens = prepare(cfg)
    print(f"{len(train_tokens):,} training tokens, {len(val_tokens):,} validation tokens")
    explicit, summary = train_course_model(train_tokens, val_tokens, tcfg, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_log(out / "loss_log.csv", summary.pop("log"))

    save_file(
        {k: v.contiguous() for k, v in explicit.state_dict().items()}, out / "model.safetensors"
    )
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n", encoding="utf-8")
    english.save_tokenizer(tokenizer, out / "tokenizer.json")
    summary.update(
        machine=machine(),
        train_tokens=len(train_tokens),
        val_tokens=len(val_tokens),
        total_time_s=round(time.perf_counter() - start, 1),
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "train_config"}, indent=2))
    write_model_card(
        out / "MODEL_CARD.md",
        model=explicit,
        tokenizer=tokenizer,
        cfg=cfg,
        train_tokens=train_tokens,
        val_tokens=val_tokens,
        summary=summary,
        loss_log_path=out / "loss_log.csv",
    )
    return summary


def cli(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    parser.add_argument("--steps", type=int, help="train this many steps (a quick trial run)")
    args = parser.parse_args(argv)
    tcfg = COURSE_TRAINING if args.steps is None else replace(COURSE_TRAINING, max_steps=args.steps)
    if missing := english.missing_books():  # before anything is written
        sys.exit(f"make course-model: {english.missing_message(missing)}")
    return main(args.out, tcfg)


if __name__ == "__main__":
    cli()
