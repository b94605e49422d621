"""The chapter 1 checkers of the output side, Unembed and the next-token log-probabilities,
accept correct code, however it is written, and name mistakes; tying saves what it says."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import embeddings as checks
from solutions import embeddings as ref
from solutions.config import GPT2_SMALL, TINY
from solutions.embeddings import Embed, TiedUnembed, Unembed
from tests.support import assert_accepts, assert_rejects


def forward(base, fn):
    """A learner's module: the reference's constructor with `fn(self, x)` as forward."""
    return type(base.__name__, (base,), {"forward": fn})


# --- Unembed and tying ------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda self, x: x @ self.W_U + self.b_U,
        lambda self, x: F.linear(x, self.W_U.T, self.b_U),
        lambda self, x: torch.einsum("bpd,dv->bpv", x, self.W_U) + self.b_U,
        lambda self, x: torch.addmm(self.b_U, x.flatten(0, 1), self.W_U).view(*x.shape[:2], -1),
    ],
)
def test_check_unembed_accepts_correct_variants(fn, capsys):
    assert_accepts(checks.check_unembed, forward(Unembed, fn), capsys)


def normalises_in_place(self, x):
    x /= x.norm(dim=-1, keepdim=True)
    return Unembed.forward(self, x)


@pytest.mark.parametrize(
    "fn, fragment",
    [
        (lambda self, x: (x @ self.W_U + self.b_U).softmax(-1), "returned probabilities"),
        (lambda self, x: (x @ self.W_U + self.b_U).log_softmax(-1), "log-probabilities"),
        (lambda self, x: x @ self.W_U, "forgot the bias b_U"),
        (lambda self, x: x @ self.W_U.T + self.b_U, "used W_U transposed"),
        (normalises_in_place, "modified its input"),
    ],
)
def test_check_unembed_names_the_mistake(fn, fragment):
    assert_rejects(checks.check_unembed, forward(Unembed, fn), fragment)


def test_tied_unembed_shares_W_E_and_saves_d_vocab_times_d_model_parameters():
    embed = Embed(TINY)
    tied, untied = TiedUnembed(TINY, embed), Unembed(TINY)
    model = nn.ModuleList([embed, tied])
    assert tied.W_U.data_ptr() == embed.W_E.data_ptr()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    saved = count(nn.ModuleList([embed, untied])) - count(model)
    assert saved == TINY.d_vocab * TINY.d_model
    x = torch.randn(2, 3, TINY.d_model)
    with torch.no_grad():
        untied.W_U.copy_(embed.W_E.T)
    torch.testing.assert_close(tied(x), untied(x))


def test_tying_saves_38597376_parameters_in_gpt2_small():
    with torch.device("meta"):
        assert sum(p.numel() for p in Embed(GPT2_SMALL).parameters()) == 38_597_376


# --- The next-token objective -----------------------------------------------------------


def log_probs_by_cross_entropy(logits, tokens):
    flat = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    return -flat.view(tokens.shape[0], -1)


def log_probs_by_indexing(logits, tokens):
    log_probs = logits - logits.logsumexp(-1, keepdim=True)
    batch, posn = tokens.shape
    rows, positions = torch.arange(batch)[:, None], torch.arange(posn - 1)[None]
    return log_probs[rows, positions, tokens[:, 1:]]


@pytest.mark.parametrize(
    "learner",
    [
        lambda logits, tokens: (
            F.log_softmax(logits, dim=-1)[:, :-1].gather(2, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
        ),
        lambda logits, tokens: (
            -F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        ),
        log_probs_by_cross_entropy,
        lambda logits, tokens: torch.take_along_dim(
            logits[:, :-1].log_softmax(-1), tokens[:, 1:, None], dim=-1
        )[..., 0],
        log_probs_by_indexing,
    ],
)
def test_check_next_token_log_probs_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_next_token_log_probs, learner, capsys)


def pick(scores, targets):
    return scores.gather(-1, targets[..., None])[..., 0]


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda lo, t: pick(lo[:, :-1].log_softmax(-1), t[:, :-1]), "did not shift the targets"),
        (lambda lo, t: pick(lo[:, 1:].log_softmax(-1), t[:, :-1]), "shifted the wrong way"),
        (lambda lo, t: pick(lo[:, :-1].softmax(-1), t[:, 1:]), "returned probabilities"),
        (lambda lo, t: pick(lo[:, :-1].softmax(-1).log(), t[:, 1:]), "log_softmax computes"),
        (lambda lo, t: pick(lo[:, :-1], t[:, 1:]), "gathered the raw logits"),
        (
            lambda lo, t: lo[:, :-1].log_softmax(-1).gather(1, t[:, 1:, None])[..., 0],
            "gathered along the position axis",
        ),
        (
            lambda lo, t: lo[:, :-1].log_softmax(-1).gather(-1, t[:, None, 1:])[:, 0],
            "read every target from the first position's row",
        ),
        (
            lambda lo, t: pick(lo.log_softmax(-1), t.roll(-1, dims=1)),
            "kept the last position, scored against a token wrapped round",
        ),
        (
            lambda lo, t: torch.cat([pick(lo[:, :-1].log_softmax(-1), t[:, 1:]), lo[:, -1:, 0]], 1),
            "kept the last position: it has no next token",
        ),
        (lambda lo, t: lo[:, :-1].log_softmax(-1).max(-1).values, "most likely token"),
        (
            lambda lo, t: pick(lo[:, :-1].log_softmax(-1), lo[:, :-1].argmax(-1)),
            "most likely token",
        ),
        (
            lambda lo, t: F.cross_entropy(lo[:, :-1].transpose(1, 2), t[:, 1:], reduction="none"),
            "returned minus the log-probabilities",
        ),
        (
            lambda lo, t: -F.cross_entropy(lo[:, :-1].transpose(1, 2), t[:, 1:]),
            "returned one number",
        ),
        (
            lambda lo, t: lo[:, :-1].log_softmax(-1).gather(-1, t[:, 1:, None]).squeeze(),
            "squeezed away the batch axis",
        ),
        (lambda lo, t: pick(lo[:, :-1].log_softmax(-1), t[:, 1:]).flatten(), "a flat vector"),
    ],
)
def test_check_next_token_log_probs_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_next_token_log_probs, learner, fragment)


def test_check_next_token_log_probs_rejects_log_softmax_in_place():
    def in_place(logits, tokens):
        logits -= logits.logsumexp(-1, keepdim=True)
        return pick(logits[:, :-1], tokens[:, 1:])

    assert_rejects(checks.check_next_token_log_probs, in_place, "modified its input")


def test_next_token_log_probs_is_minus_the_cross_entropy_loss():
    logits = torch.randn(3, 9, TINY.d_vocab)
    tokens = torch.randint(0, TINY.d_vocab, (3, 9))
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    torch.testing.assert_close(-ref.next_token_log_probs(logits, tokens).mean(), loss)


def test_next_token_log_probs_of_one_token_is_empty():
    assert ref.next_token_log_probs(torch.randn(2, 1, 5), torch.zeros(2, 1).long()).shape == (2, 0)
