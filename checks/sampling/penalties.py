"""The checker of chapter 7's repetition penalties: apply_penalties, on hand-made histories
(one token generated three times, nothing generated yet, two rows with histories of their own)
under frequency and presence penalties alone and together. A result that adds the penalties,
applies one where the other belongs, or counts the first row's tokens for every row is named."""

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
                got = check.call(apply_penalties, logits, generated, freq, pres)
                check.tensor(got, expected, what="penalised logits", mistakes=mistakes)
