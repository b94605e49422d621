"""The course model: a small GPT-2 trained by the course's own code on English prose.

`load_course_model()` reads the shipped files in course/data/course_model/ (written by
`make course-model`) and returns the model, in eval mode, with its tokenizer. Offline.
`untrained_course_model()` is the same model as its training starts.
"""

import json
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_file

from course import DATA
from solutions.config import COURSE_MODEL, Config
from solutions.tokenizer import BPETokenizer
from solutions.training import TrainConfig
from solutions.transformer import Transformer

MODEL_DIR = DATA / "course_model"


def load_course_model(directory: Path = MODEL_DIR) -> tuple[Transformer, BPETokenizer]:
    """The trained Transformer (eval mode) and the BPE tokenizer it was trained with."""
    needed = ["config.json", "model.safetensors", "tokenizer.json"]
    missing = [name for name in needed if not (directory / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"the course model is missing {', '.join(missing)} in {directory}. The course ships "
            "these files: restore them with `git checkout -- course/data/course_model` (or, "
            "with the English corpus built by `make corpus`, retrain them: `make course-model`)"
        )
    from course.models.english import load_tokenizer

    settings = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    cfg = Config(**{f.name: settings[f.name] for f in fields(Config)})
    model = Transformer(cfg)
    weights = load_file(directory / "model.safetensors")
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items()}
    if found != expected:
        raise ValueError(
            f"model.safetensors does not fit config.json: missing {expected.keys() - found.keys()}, "
            f"unexpected {found.keys() - expected.keys()}, wrong shapes "
            f"{[n for n in expected.keys() & found.keys() if expected[n] != found[n]]}"
        )
    model.load_state_dict({name: t.float() for name, t in weights.items()}, strict=True)
    return model.eval(), load_tokenizer(directory / "tokenizer.json")


# Chapter 6b's recipe for 1,500 steps of 32 windows of 128 tokens: 6.1M tokens, about three
# passes over the 2.1M training tokens, few enough for a CPU. Early stopping on the
# validation loss guards against memorising.
COURSE_TRAINING = TrainConfig(max_steps=1500)


def untrained_course_model(cfg: Config = COURSE_MODEL) -> Transformer:
    """The course model as training starts: GPT-2's initialisation, with the training's seed."""
    torch.manual_seed(COURSE_TRAINING.seed)
    return Transformer(cfg).eval()
