"""The course model's yardsticks: baselines, the windowed loss, sampling and the model card."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course.models.evaluate import (
    SAMPLE_PROMPTS,
    BigramModel,
    UnigramModel,
    model_loss,
    read_loss_log,
    sample,
    unseen_texts,
    write_model_card,
)
from solutions.config import TINY
from solutions.corpus import load_corpus
from solutions.tokenizer import BPETokenizer, train_incremental


class BigramNet(nn.Module):
    """A stand-in for the transformer: tokens -> logits from the previous token alone."""

    def __init__(self, d_vocab: int, n_ctx: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.cfg = SimpleNamespace(d_vocab=d_vocab, n_ctx=n_ctx)
        self.table = nn.Embedding(d_vocab, d_vocab)

    def forward(self, tokens):
        assert tokens.shape[1] <= self.cfg.n_ctx
        return self.table(tokens)


class PrefixNet(BigramNet):
    """Logits depend on the whole prefix (a running mean), so windows change the loss."""

    def forward(self, tokens):
        emb = self.table(tokens).cumsum(1)
        return emb / torch.arange(1, tokens.shape[1] + 1)[None, :, None]


def test_unigram_loss_by_hand():
    # Fitted on [0, 0, 1] with k = 1 over 3 tokens: p = (3/6, 2/6, 1/6).
    uni = UnigramModel(torch.tensor([0, 0, 1]), d_vocab=3, k=1.0)
    # Scores tokens[1:] = [1, 2]: -(log 2/6 + log 1/6) / 2.
    assert uni.loss(torch.tensor([0, 1, 2])) == pytest.approx(
        -(math.log(2 / 6) + math.log(1 / 6)) / 2
    )
    # k = 0 is the plain frequency: [0, 1] under p = (2/3, 1/3).
    mle = UnigramModel(torch.tensor([0, 0, 1]), d_vocab=3, k=0.0)
    assert mle.loss(torch.tensor([1, 0, 1])) == pytest.approx(
        -(math.log(2 / 3) + math.log(1 / 3)) / 2
    )


def test_bigram_loss_by_hand():
    # Pairs of [0, 1, 0, 1, 1]: (0,1) x2, (1,0) x1, (1,1) x1. Unigram with k = 1, d_vocab 3:
    # counts (2, 3, 0) -> p = (3/8, 4/8, 1/8). Discount D = 0.5.
    bi = BigramModel(torch.tensor([0, 1, 0, 1, 1]), d_vocab=3, discount=0.5, k=1.0)
    p_uni = [3 / 8, 4 / 8, 1 / 8]
    # After 0: c(0) = 2, one distinct follower. p(1|0) = 1.5/2 + 0.5 * 1/2 * p_uni(1).
    p_1_after_0 = 1.5 / 2 + 0.25 * p_uni[1]
    # After 1: c(1) = 2, two followers. p(2|1) = 0 + 0.5 * 2/2 * p_uni(2) (a pair never seen).
    p_2_after_1 = 0.5 * p_uni[2]
    # After 2 (never a predecessor): the unigram model. p(0|2) = p_uni(0).
    expected = -(math.log(p_1_after_0) + math.log(p_2_after_1) + math.log(p_uni[0])) / 3
    assert bi.loss(torch.tensor([0, 1, 2, 0])) == pytest.approx(expected)


def test_bigram_probabilities_sum_to_one():
    bi = BigramModel(torch.randint(0, 7, (200,), generator=torch.Generator().manual_seed(0)), 9)
    for prev in range(9):
        p = bi.log_probs(torch.full((9,), prev), torch.arange(9)).exp()
        assert p.sum().item() == pytest.approx(1.0)


def test_smoothing_gives_unseen_tokens_a_finite_loss():
    train, unseen = torch.tensor([0, 1, 0, 1, 0]), torch.tensor([0, 5, 6, 5])
    assert math.isfinite(UnigramModel(train, d_vocab=8).loss(unseen))
    assert math.isfinite(BigramModel(train, d_vocab=8).loss(unseen))


def test_bigram_beats_unigram_on_a_repeating_sequence():
    train = torch.arange(5).repeat(40)
    test = torch.arange(5).repeat(3)
    assert BigramModel(train, 5).loss(test) < 0.5 * UnigramModel(train, 5).loss(test)


@pytest.mark.parametrize("length", [2, 25, 33, 64, 65])
def test_model_loss_equals_cross_entropy_over_windows(length):
    model, n_ctx = PrefixNet(11, n_ctx=8), 8
    tokens = torch.randint(0, 11, (length,), generator=torch.Generator().manual_seed(length))
    # By hand: each window of n_ctx inputs, run on its own, predicts the next n_ctx tokens.
    total = 0.0
    with torch.no_grad():
        for start in range(0, length - 1, n_ctx):
            x = tokens[start : start + n_ctx]
            y = tokens[start + 1 : start + n_ctx + 1]
            x = x[: len(y)]
            total += F.cross_entropy(model(x[None])[0], y, reduction="sum").item()
    expected = total / (length - 1)
    assert model_loss(model, tokens, n_ctx, batch_size=3) == pytest.approx(expected, rel=1e-6)
    assert model_loss(model, tokens, n_ctx, batch_size=3) == model_loss(model, tokens, n_ctx, 3)


def test_model_loss_of_a_bigram_net_matches_a_direct_cross_entropy():
    model = BigramNet(11, n_ctx=8)
    tokens = torch.randint(0, 11, (50,), generator=torch.Generator().manual_seed(1))
    # A net that sees only the previous token gives the same loss whatever the windows.
    with torch.no_grad():
        expected = F.cross_entropy(model.table(tokens[:-1]), tokens[1:]).item()
    assert model_loss(model, tokens, n_ctx=8, batch_size=2) == pytest.approx(expected, rel=1e-6)
    assert model.training, "model_loss must leave the model's mode as it found it"


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer(train_incremental(load_corpus()[:20_000], 300))


def test_sample_is_deterministic_for_a_seed(tokenizer):
    model = BigramNet(300, n_ctx=16)
    a = sample(model, tokenizer, "The value", 30, seed=3)
    assert a == sample(model, tokenizer, "The value", 30, seed=3)
    assert a.startswith("The value")
    assert a != sample(model, tokenizer, "The value", 30, seed=4)


def test_sample_at_low_temperature_is_greedy(tokenizer):
    model = BigramNet(300, n_ctx=16)
    tokens = tokenizer.encode("The value")
    for _ in range(20):
        with torch.no_grad():
            tokens.append(model(torch.tensor([tokens[-16:]]))[0, -1].argmax().item())
    greedy = tokenizer.decode(tokens)
    assert sample(model, tokenizer, "The value", 20, temperature=1e-4, seed=5) == greedy
    assert sample(model, tokenizer, "The value", 20, temperature=0) == greedy


def test_unseen_texts_are_three_kinds_of_english():
    texts = unseen_texts()
    assert len(texts) == 3
    for text in texts.values():
        assert 1_500 <= len(text) <= 3_000


def test_read_loss_log_finds_the_lowest_validation_loss(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,train_loss,val_loss\n0,5,5.5\n10,4,\n20,3,3.5\n30,2.5,3.6\n")
    assert read_loss_log(log) == {
        "evaluations": 3,
        "best_val_loss": 3.5,
        "best_step": 20,
        "last_val_loss": 3.6,
        "last_step": 30,
    }
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text('{"step": 0, "val_loss": 2.0}\n{"step": 5, "train_loss": 1.0}\n')
    assert read_loss_log(jsonl)["best_val_loss"] == 2.0


def test_write_model_card_writes_markdown_and_json(tmp_path, tokenizer):
    model = BigramNet(300, n_ctx=16)
    ids = torch.tensor(tokenizer.encode(load_corpus()[:6_000]))
    train, val = ids[: len(ids) * 3 // 4], ids[len(ids) * 3 // 4 :]
    log = tmp_path / "loss_log.csv"
    log.write_text("step,train_loss,val_loss\n0,5.7,5.7\n1,5.6,\n")
    summary = {"steps": 2, "tokens_seen": 64, "time_s": 0.5, "machine": "a test"}
    card = write_model_card(
        tmp_path / "MODEL_CARD.md",
        model=model,
        tokenizer=tokenizer,
        cfg=TINY.but(d_vocab=300, n_ctx=16),
        train_tokens=train,
        val_tokens=val,
        summary=summary,
        loss_log_path=log,
    )
    stored = json.loads((tmp_path / "card.json").read_text())
    assert stored == json.loads(json.dumps(card))
    assert {
        "config",
        "data",
        "training",
        "validation",
        "unseen_english",
        "samples",
        "loss_log",
    } <= set(card)
    assert card["training"]["machine"] == "a test"
    assert card["validation"]["model"] == model_loss(model, val, 16, 16)
    assert set(card["unseen_english"]) == set(unseen_texts())
    assert [s["prompt"] for s in card["samples"]] == list(SAMPLE_PROMPTS)
    markdown = (tmp_path / "MODEL_CARD.md").read_text()
    assert f"{card['validation']['bigram']:.3f}" in markdown
    assert card["samples"][0]["text"] in markdown


def test_a_net_holding_the_bigram_probabilities_scores_as_the_bigram_model():
    # Same positions scored: the windowed loss of a net that outputs the bigram model's
    # log-probabilities is the bigram model's own loss on the same tokens.
    gen = torch.Generator().manual_seed(2)
    train, val = (
        torch.randint(0, 13, (400,), generator=gen),
        torch.randint(0, 13, (37,), generator=gen),
    )
    bigram, net = BigramModel(train, 13), BigramNet(13, n_ctx=8)
    with torch.no_grad():
        for prev in range(13):
            net.table.weight[prev] = bigram.log_probs(torch.full((13,), prev), torch.arange(13))
    assert model_loss(net, val, n_ctx=8, batch_size=2) == pytest.approx(bigram.loss(val), rel=1e-6)
