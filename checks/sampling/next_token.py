"""The checker of chapter 7's sampler, sample_next_token: 20,000 seeded draws per setting
(greedy, temperatures, top_k, top_p, both) must pass a chi-square test against the distribution
the settings call for; a correct sampler fails it with probability under one in a million, and
the seed makes the verdict the same at every run. Draws that fit a usual mistake's distribution
better (the temperature multiplied or left out, no softmax, a filter skipped or applied before
the temperature, top_p before top_k) are named."""

import math

import torch

from checks._core import exercise, kind_of, seeded
from solutions import sampling as ref

N_DRAWS = 20_000
Z_ONE_IN_A_MILLION = 4.75


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's statistic over the tokens the distribution allows; inf if a disallowed one
    was drawn."""
    allowed = probs > 0
    if counts[~allowed].sum() > 0:
        return math.inf
    expected = probs[allowed] * counts.sum()
    return ((counts[allowed] - expected).pow(2) / expected).sum().item()


def _chi_square_bound(df: int) -> float:
    """The chi-square quantile a correct sampler exceeds once in a million (Wilson-Hilferty)."""
    if df <= 0:
        return 0.0
    a = 2 / (9 * df)
    return df * (1 - a + Z_ONE_IN_A_MILLION * math.sqrt(a)) ** 3


def _distribution(logits, temperature, top_k, top_p):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    x = logits / temperature
    if top_k is not None:
        x = ref.top_k_filter(x, top_k)
    if top_p is not None:
        x = ref.top_p_filter(x, top_p)
    return x.softmax(-1)


def _sampling_mistakes(logits, temperature, top_k, top_p) -> dict[str, torch.Tensor]:
    mistakes = {
        "multiplied the logits by the temperature: divide them by it": _distribution(
            logits * temperature * temperature, temperature, top_k, top_p
        ),
        "left out the temperature": _distribution(logits, 1.0, top_k, top_p),
        "drew from the logits as if they were probabilities: take their softmax": (
            logits.clamp(min=0) / logits.clamp(min=0).sum(-1, keepdim=True)
        ),
    }
    if top_k is not None:
        mistakes["did not apply top_k"] = _distribution(logits, temperature, None, top_p)
    if top_p is not None:
        mistakes["did not apply top_p"] = _distribution(logits, temperature, top_k, None)
        mistakes["applied top_p before dividing by the temperature: divide first, as the "
                 "nucleus is taken of the distribution you draw from"] = ref.top_p_filter(
            ref.top_k_filter(logits, top_k) if top_k else logits, top_p
        ).div(temperature).softmax(-1)  # fmt: skip
    if top_k is not None and top_p is not None:
        # First: where the nucleus fits in the top k, the wrong order is top_p alone too; a
        # sampler without top_k has failed the top_k case before it gets here.
        order = {"applied top_p before top_k: filter by top_k first, then take the nucleus "
                 "of what it kept, as HuggingFace's generate does": ref.top_k_filter(
            ref.top_p_filter(logits / temperature, top_p), top_k
        ).softmax(-1)}  # fmt: skip
        mistakes = order | mistakes
    return mistakes


@exercise(ref.sample_next_token)
def check_sample_next_token(check, sample_next_token):
    logits = torch.tensor([[1.0, 2.5, 0.3, -1.0, 2.0, 0.0, 1.2]])
    settings = [
        (0.0, None, None, "temperature 0 is greedy"),
        (1.0, None, None, "the softmax"),
        (0.5, None, None, "temperature 0.5 sharpens"),
        (2.0, None, None, "temperature 2 flattens"),
        (1.0, 3, None, "top_k 3"),
        (2.0, None, 0.7, "top_p 0.7 of the distribution at temperature 2"),
        (0.8, 4, 0.9, "top_k 4, then top_p 0.9"),
        (1.0, 3, 0.8, "top_k 3, then top_p 0.8 of what top_k kept"),
    ]
    for temperature, top_k, top_p, label in settings:
        with check.case(f"{label} ({N_DRAWS:,} seeded draws)"):
            batch = logits.expand(N_DRAWS, -1)
            got = check.call(sample_next_token, batch, temperature, top_k, top_p, seeded(3))
            if not isinstance(got, torch.Tensor) or got.shape != (N_DRAWS,):
                if got is None:
                    check.fail(
                        "your code returned None for the token ids: did you forget `return`?"
                    )
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else kind_of(got)
                check.fail(f"return one token id per row, shape ({N_DRAWS},); got {shape}.")
            if got.is_floating_point():
                check.fail(f"return integer token ids, not dtype {got.dtype}.")
            again = sample_next_token(batch, temperature, top_k, top_p, seeded(3))
            if not torch.equal(got, again):
                check.fail(
                    "two calls with generators seeded alike drew different tokens: draw with "
                    "the `generator` you were given (torch.multinomial(..., generator=generator))."
                )
            counts = torch.bincount(got, minlength=logits.shape[-1]).float()
            probs = _distribution(logits, temperature, top_k, top_p)[0]
            statistic = _chi_square(counts, probs)
            df = int((probs > 0).sum()) - 1
            if statistic <= _chi_square_bound(df):
                continue
            observed = (counts / N_DRAWS).tolist()
            for mistake, wrong in _sampling_mistakes(logits, temperature, top_k, top_p).items():
                wrong = wrong[0]
                if _chi_square(counts, wrong) <= _chi_square_bound(int((wrong > 0).sum()) - 1):
                    check.fail(f"your draws fit another distribution: it looks like you {mistake}.")
            check.fail(
                "your draws do not follow the distribution these settings call for "
                f"(chi-square {statistic:.0f} over {df} degrees of freedom).\n"
                f"  expected frequencies {[round(x, 3) for x in probs.tolist()]}\n"
                f"  your frequencies     {[round(x, 3) for x in observed]}"
            )
    with check.case("a batch of one row, as generate() passes for one prompt"):
        for temperature, top_k, top_p, _ in settings[:2]:
            got = check.call(sample_next_token, logits, temperature, top_k, top_p, seeded(3))
            if isinstance(got, torch.Tensor) and got.shape != (1,):
                check.fail(
                    f"at temperature {temperature:g}, one row of logits gave shape "
                    f"{tuple(got.shape)}, expected (1,): one token id per row, even for one row. "
                    "squeeze() drops every axis of size 1, the batch's too: index [:, 0] or "
                    "squeeze(-1)."
                )
