"""Chapter 7's text model: the shipped files are what `python -m course.models.train_text_model`
writes, the model learned the corpus, and chapter 7's generation code writes text with it
(corpus words) where the untrained model writes noise."""

import dataclasses
import math
import re

import pytest
import torch

from course.models import text_model
from course.models.train_text_model import train_text_model
from solutions.corpus import load_corpus
from solutions.sampling import generate
from solutions.training import TrainConfig

WORD = re.compile(rb"[A-Za-z]{2,}")


@pytest.fixture(scope="module")
def shipped():
    return text_model.load_text_model()


def test_shipped_log_starts_as_a_fresh_run_does():
    logged = text_model.load_log()
    tcfg = TrainConfig(**logged["train_config"] | {"betas": tuple(logged["train_config"]["betas"])})
    assert tcfg == text_model.TEXT_TRAINING
    steps = 20  # within the warm-up, a short run is the start of the long one
    assert tcfg.warmup_steps >= steps
    _, log = train_text_model(dataclasses.replace(tcfg, max_steps=steps), False)
    fresh = torch.tensor([row["train_loss"] for row in log])
    shipped = torch.tensor([row["train_loss"] for row in logged["log"][:steps]])
    torch.testing.assert_close(fresh, shipped, rtol=1e-4, atol=1e-5)


def test_shipped_losses_are_those_of_the_shipped_weights(shipped):
    logged = text_model.load_log()
    assert text_model.validation_loss(shipped) == pytest.approx(logged["val_loss"], abs=1e-4)
    untrained = text_model.validation_loss(text_model.untrained_model())
    assert untrained == pytest.approx(logged["untrained_val_loss"], abs=1e-4)
    evals = [row["val_loss"] for row in logged["log"] if "val_loss" in row]
    # The shipped weights are the run's best evaluation, rounded to float16.
    assert logged["val_loss"] == pytest.approx(min(evals), abs=0.02)


def test_the_model_learned_the_corpus():
    logged = text_model.load_log()
    train_bytes, val_bytes = text_model.text_tokens()
    counts = torch.bincount(train_bytes, minlength=256).double() + 1
    unigram = -(counts / counts.sum()).log()[val_bytes].mean().item()
    assert logged["untrained_val_loss"] == pytest.approx(math.log(256), abs=0.1)
    # A byte unigram of the training split scores about 3 nats; the model a good deal less.
    assert logged["val_loss"] < unigram - 1.0, (logged["val_loss"], unigram)


def corpus_word_share(new: list[int]) -> float:
    """The share of the generated words (2+ letters) that occur in the corpus."""
    vocabulary = set(WORD.findall(load_corpus().encode()))
    words = WORD.findall(bytes(new))
    return sum(w in vocabulary for w in words) / max(1, len(words))


def test_the_same_generation_code_writes_text_once_trained(shipped):
    prompt = [list(b"The ")]
    before = generate(text_model.untrained_model(), prompt, 300, temperature=0.8, seed=0)[0]
    after = generate(shipped, prompt, 300, temperature=0.8, seed=0)[0]
    assert corpus_word_share(before) < 0.3
    assert corpus_word_share(after) > 0.7
    assert after == generate(shipped, prompt, 300, temperature=0.8, seed=0, use_cache=False)[0]


def test_shipped_files_are_small():
    total = sum(p.stat().st_size for p in text_model.OUT.iterdir())
    assert total < 1_200_000, total
