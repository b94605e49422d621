"""Train chapter 7's text model and write it to course/data/text_model/.

`python -m course.models.train_text_model` (or `make text-model`): a two-layer GPT-2 (the course's
Transformer, MLPs and LayerNorms included) whose tokens are the bytes of the offline corpus
(solutions.corpus), so it needs no tokenizer, trained by chapter 6b's loop
(solutions.training.train). Seeded, on the CPU with one thread, in a few minutes. Written:
the weights (safetensors, rounded to float16: the shipped model is the rounded one) and
log.json (the training configuration, the loss log, and the validation loss of the shipped
weights and of an untrained model).
"""

import argparse
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

from course.models.shipped import round_to_float16, save_weights, setup, train_logged, write_json
from course.models.text_model import (
    OUT,
    TEXT_MODEL,
    TEXT_TRAINING,
    load_text_model,
    text_tokens,
    untrained_model,
    validation_loss,
)
from solutions.training import TrainConfig
from solutions.transformer import Transformer


def train_text_model(
    tcfg: TrainConfig = TEXT_TRAINING, progress: bool = True
) -> tuple[Transformer, list[dict]]:
    """The model trained by chapter 6b's loop, rounded as shipped; and its loss log."""
    setup(tcfg.seed)
    model = Transformer(TEXT_MODEL)
    log = train_logged(model, *text_tokens(), tcfg, progress)
    return round_to_float16(model), log


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
