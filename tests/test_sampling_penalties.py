"""Chapter 7's HuggingFace repetition_penalty: it is transformers' own
RepetitionPenaltyLogitsProcessor, and its checker names the usual mistakes and accepts a
penalty written differently."""

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from checks import sampling as checks
from solutions.sampling import repetition_penalty
from support import assert_accepts, assert_rejects


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equals_huggingface(penalty):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=generator) * 3
    tokens = torch.randint(0, 50, (3, 12), generator=generator)  # repeats within a row
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(tokens, logits.clone())
    torch.testing.assert_close(repetition_penalty(logits, tokens, penalty), theirs)


def by_loop(logits, tokens, penalty):
    out = logits.clone()
    for row, seen in enumerate(tokens.tolist()):
        for token in set(seen):
            value = logits[row, token]
            out[row, token] = value * penalty if value < 0 else value / penalty
    return out


def divide_all(logits, tokens, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, tokens, True)
    return torch.where(seen, logits / penalty, logits)


def generated_only(logits, tokens, penalty):
    # The last half of the tokens, as if the prompt were left out.
    return repetition_penalty(logits, tokens[:, tokens.shape[1] // 2 :], penalty)


def per_occurrence(logits, tokens, penalty):
    out = logits.clone()
    for row, seen in enumerate(tokens.tolist()):
        for token in seen:
            out[row, token] = (
                out[row, token] * penalty if out[row, token] < 0 else out[row, token] / penalty
            )
    return out


def additive(logits, tokens, penalty):
    seen = torch.zeros_like(logits).scatter(-1, tokens, 1.0)
    return logits - penalty * seen


def first_row_everywhere(logits, tokens, penalty):
    return repetition_penalty(logits, tokens[:1].expand_as(tokens), penalty)


def every_row_everywhere(logits, tokens, penalty):
    return repetition_penalty(logits, tokens.flatten().expand(len(tokens), -1), penalty)


def test_check_repetition_penalty_accepts_the_reference_and_a_loop(capsys):
    assert_accepts(checks.check_repetition_penalty, repetition_penalty, capsys)
    assert_accepts(checks.check_repetition_penalty, by_loop, capsys)


@pytest.mark.parametrize(
    "learner, diagnosis",
    [
        (divide_all, "multiply negative logits"),
        (generated_only, "prompt"),
        (per_occurrence, "once per occurrence"),
        (additive, "subtracted the penalty"),
        (first_row_everywhere, "first row's tokens"),
        (every_row_everywhere, "every row's tokens in every row"),
    ],
    ids=lambda x: getattr(x, "__name__", "")[:20],
)
def test_check_repetition_penalty_names_mistakes(learner, diagnosis):
    assert_rejects(checks.check_repetition_penalty, learner, diagnosis)


def test_check_repetition_penalty_rejects_the_stub():
    def stub(*args):
        raise NotImplementedError

    assert_rejects(checks.check_repetition_penalty, stub, "not implemented yet")
