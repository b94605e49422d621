"""The checker of chapter 6b's data loader: random windows cut out of the token stream."""

import torch

from checks._core import exercise, seeded
from solutions import training as ref


@exercise(ref.random_windows)
def check_random_windows(check, random_windows):
    for i, (n, batch, n_ctx) in enumerate([(200, 4, 8), (50, 7, 5), (30, 2, 27), (1000, 16, 3)]):
        with check.case(f"{n} tokens, batch {batch}, n_ctx {n_ctx}"):
            # Tokens 0, 1, 2...: a window is consecutive exactly when it counts up by one.
            tokens = torch.arange(n) + 3
            got = check.call(random_windows, tokens, batch, n_ctx, seeded(10 + i))
            again = check.call(random_windows, tokens, batch, n_ctx, seeded(10 + i))
            if all(isinstance(x, torch.Tensor) for x in (got, again)) and not torch.equal(
                again, got
            ):
                check.fail(
                    "two calls with generators of the same seed gave different windows: "
                    "draw the starts with the `generator` you are given "
                    "(torch.randint(..., generator=generator))."
                )
            expected = ref.random_windows(tokens, batch, n_ctx, seeded(10 + i))
            shapes = [
                (
                    (batch, n_ctx),
                    "cut windows of n_ctx tokens: it takes n_ctx + 1, as "
                    "the last of them is only ever a target",
                )
            ]
            if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                steps = got[:, 1:] - got[:, :-1]
                if not (steps == 1).all():
                    check.fail(
                        "a window is not a run of consecutive tokens: slice it, "
                        "tokens[start : start + n_ctx + 1]."
                    )
            g = seeded(10 + i)
            late = torch.randint(0, n - n_ctx - 1, (batch,), generator=g).tolist()
            mistakes = {
                "drew starts below len(tokens) - n_ctx - 1: the last window that fits starts "
                "at len(tokens) - n_ctx - 1, so draw below len(tokens) - n_ctx": torch.stack(
                    [tokens[s : s + n_ctx + 1] for s in late]
                )
            }
            check.tensor(got, expected, what="windows", mistakes=mistakes, shapes=shapes)
