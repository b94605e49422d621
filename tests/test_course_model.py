"""The shipped course model (course/data/course_model/): it loads offline, has no unembedding
bias, opens in HuggingFace's GPT2LMHeadModel and TransformerLens's bridge with the same logits,
beats its card's baselines, and is what `make course-model` trains: a fresh run's first steps
give the shipped log (where the English corpus is built, `make corpus`)."""

import csv
import json

import pytest
import torch

from course.models import english
from course.models.course_model import COURSE_TRAINING, MODEL_DIR, load_course_model
from solutions import gpt2
from solutions.config import COURSE_MODEL

SENTENCE = "The old keeper climbed the stairs of the lighthouse every evening to light the lamp."


@pytest.fixture(scope="module")
def shipped():
    return load_course_model()


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((MODEL_DIR / "card.json").read_text(encoding="utf-8"))


def test_the_shipped_model_loads_offline_with_its_tokenizer(shipped):
    model, tokenizer = shipped
    assert model.cfg == COURSE_MODEL and not model.training
    assert tokenizer.decode(tokenizer.encode(SENTENCE)) == SENTENCE
    assert not model.unembed.b_U.any(), "GPT-2 has no unembedding bias: b_U must stay zero"


def test_the_shipped_model_opens_in_gpt2_lm_head_model_with_equal_logits(shipped):
    model, tokenizer = shipped
    tokens = torch.tensor([tokenizer.encode(SENTENCE)])
    hf_model = gpt2.to_huggingface(model)
    with torch.no_grad():
        difference = (hf_model(tokens).logits - model(tokens)).abs().max().item()
    assert difference < 1e-4


def test_the_card_shows_the_model_beating_its_baselines(card):
    validation = card["validation"]
    assert validation["model"] < validation["bigram"] < validation["unigram"]
    for name, text in card["unseen_english"].items():
        assert text["model"] < text["unigram_on_text"], name
    assert card["parameters"] == sum(p.numel() for p in load_course_model()[0].parameters())


def test_the_shipped_log_is_the_trainers():
    """The log ends where the card says, and its best validation loss is the card's."""
    with open(MODEL_DIR / "loss_log.csv") as f:
        rows = list(csv.DictReader(f))
    card = json.loads((MODEL_DIR / "card.json").read_text(encoding="utf-8"))
    assert int(rows[-1]["step"]) == card["training"]["steps"]
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert min(val) == pytest.approx(card["training"]["final_val_loss"], rel=1e-6)
    assert card["training"]["train_config"]["max_steps"] == COURSE_TRAINING.max_steps


def _corpus_built() -> bool:
    try:
        english.load_manifest()
    except FileNotFoundError:
        return False
    finally:
        english.load_manifest.cache_clear()  # other tests point the loader elsewhere
    return True


@pytest.mark.skipif(not _corpus_built(), reason="the English corpus is not built: `make corpus`")
def test_a_fresh_run_starts_as_the_shipped_model_did():
    from course.models.train_course_model import prepare, train_course_model

    shipped_tokenizer = load_course_model()[1]
    steps = 12  # inside the warm-up, where a fresh run and the shipped one take the same steps
    threads = torch.get_num_threads()
    try:
        tokenizer, train_tokens, val_tokens = prepare()
        assert tokenizer.merges == shipped_tokenizer.merges, "the course's BPE is not the shipped"
        _, summary = train_course_model(train_tokens, val_tokens, stop_at=steps, progress=False)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
        english.load_manifest.cache_clear()
        english._documents.cache_clear()
    with open(MODEL_DIR / "loss_log.csv") as f:
        logged = [float(r["train_loss"]) for r in csv.DictReader(f)][:steps]
    fresh = [row["train_loss"] for row in summary["log"]][:steps]
    torch.testing.assert_close(torch.tensor(fresh), torch.tensor(logged), rtol=1e-4, atol=1e-5)
