"""The checkers of chapter 7's repetition penalties. OpenAI's additive apply_penalties, on
hand-made histories (one token generated three times, nothing generated yet, two rows with
histories of their own) under frequency and presence penalties alone and together: a result
that adds the penalties, applies one where the other belongs, counts the first row's tokens
for every row or pools the rows' counts is named. HuggingFace's multiplicative repetition_penalty, on positive
and negative logits, repeated tokens and two rows: dividing negative logits, subtracting,
penalising once per occurrence, leaving some tokens (the prompt's) out, or the first row's
or every row's tokens everywhere is named."""

import torch

from checks._core import exercise, seeded
from checks.sampling._common import _row
from solutions import sampling as ref


@exercise(ref.apply_penalties)
def check_apply_penalties(check, apply_penalties):
    cases = [
        ("token 2 generated three times, token 0 once", _row(1.0, 2.0, 3.0, 4.0), [[2, 0, 2, 2]]),
        ("nothing generated yet", _row(1.0, -2.0, 0.5), [[]]),
        ("two rows, each with its own history", torch.randn(2, 7, generator=seeded(0)),
         [[6, 6, 1], [3, 3, 3]]),
    ]  # fmt: skip
    for label, logits, history in cases:
        for freq, pres in [(0.5, 0.0), (0.0, 1.5), (0.7, 0.3)]:
            with check.case(f"{label}, frequency_penalty {freq}, presence_penalty {pres}"):
                generated = torch.tensor(history, dtype=torch.long).view(len(history), -1)
                expected = ref.apply_penalties(logits, generated, freq, pres)
                counts = torch.zeros_like(logits).scatter_add_(
                    -1, generated, torch.ones_like(generated, dtype=logits.dtype)
                )
                seen = (counts > 0).float()
                mistakes = {
                    "added the penalties: they lower the logits of tokens already generated": (
                        logits + freq * counts + pres * seen
                    ),
                    "applied the presence penalty once per occurrence: it applies once per "
                    "token that appeared at all": logits - (freq + pres) * counts,
                    "applied the frequency penalty once per token: it grows with the count": (
                        logits - (freq + pres) * seen
                    ),
                    "counted the tokens of the first row for every row": logits
                    - freq * counts[:1]
                    - pres * seen[:1],
                }
                pooled = counts.sum(0, keepdim=True)
                if len(history) > 1:
                    mistakes["pooled the counts of every row: count each row's own tokens "
                             "(scatter_add_ along the last axis, row by row)"] = (
                        logits - freq * pooled - pres * (pooled > 0).float()
                    )  # fmt: skip
                got = check.call(apply_penalties, logits, generated, freq, pres)
                check.tensor(got, expected, what="penalised logits", mistakes=mistakes)


@exercise(ref.repetition_penalty)
def check_repetition_penalty(check, repetition_penalty):
    cases = [
        ("prompt [2, 1], then 2, 2 generated: a positive and a negative logit seen",
         _row(1.0, -2.0, 3.0, 0.5), [[2, 1, 2, 2]], 1.5),
        ("a penalty below 1 makes seen tokens likelier", _row(1.0, -2.0, 3.0, 0.5), [[0, 1]], 0.8),
        ("two rows, each with its own tokens", torch.randn(2, 7, generator=seeded(1)),
         [[6, 6, 1, 0], [3, 3, 3, 5]], 1.3),
    ]  # fmt: skip
    for label, logits, history, penalty in cases:
        with check.case(f"{label}, penalty {penalty}"):
            tokens = torch.tensor(history)
            expected = ref.repetition_penalty(logits, tokens, penalty)
            counts = torch.zeros_like(logits).scatter_add_(
                -1, tokens, torch.ones_like(logits[:, :1]).expand_as(tokens)
            )
            seen = counts > 0
            penalise = torch.where(logits < 0, logits * penalty, logits / penalty)
            mistakes = {
                "divided every seen logit by the penalty: a negative one divided rises toward 0, "
                "so multiply negative logits instead": torch.where(seen, logits / penalty, logits),
                "subtracted the penalty: HuggingFace's scales the logit (divide positive, "
                "multiply negative)": logits - penalty * seen,
                "applied it once per occurrence: a token seen three times is penalised once": (
                    torch.where(logits < 0, logits * penalty**counts, logits / penalty**counts)
                ),
                "penalised every row's tokens in every row: each row has its own history": (
                    torch.where(seen.any(0, keepdim=True), penalise, logits)
                ),
                "penalised the first row's tokens in every row": torch.where(
                    seen[:1], torch.where(logits < 0, logits * penalty, logits / penalty), logits
                ),
            }
            got = check.call(repetition_penalty, logits, tokens, penalty)
            _name_unpenalised(check, got, logits, expected)
            check.tensor(got, expected, what="penalised logits", mistakes=mistakes)


def _name_unpenalised(check, got, logits, expected) -> None:
    """Right wherever it changed a logit, but some seen token's left as it was: a part of
    `tokens`, most often the prompt, was not counted."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return
    right, untouched = torch.isclose(got, expected), torch.isclose(got, logits)
    if (right | untouched).all() and (untouched & ~right).any():
        check.fail(
            "some tokens of `tokens` kept their logits: penalise every token that appears in "
            "it, the prompt's as well as those generated."
        )
