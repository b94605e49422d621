"""The checkers of chapter 7's deterministic filters, top_k_filter and top_p_filter: first on
hand-made logits whose kept tokens are worked out by hand, then on random ones. Dropped tokens
are compared as a set (-inf, or anything below -1e8) and kept ones by value; a wrong set that
matches a usual mistake (the k smallest, one token too many, a token tied with the k-th
dropped, the nucleus summed unsorted or returned sorted, tokens dropped at p = 1) is named."""

import torch

from checks._core import exercise, seeded
from checks.sampling._common import INF, _row
from solutions import sampling as ref


def _kept(logits: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(row > -1e8).flatten().tolist() for row in logits]


def _check_filtered(check, got, expected, mistakes: dict[str, torch.Tensor]) -> None:
    """Compare filtered logits: the same tokens dropped (-inf, or any value below -1e8), and
    the same values where kept."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        check.tensor(got, expected.clamp(min=-1e9), what="filtered logits")
    dropped, expected_dropped = got < -1e8, expected == INF
    if torch.isnan(got).any():
        check.fail("the filtered logits hold NaN.")
    if expected_dropped.any() and not dropped.any() and (got[expected_dropped] == 0).all():
        check.fail("you set the other logits to 0: set them to -inf, so that their probability "
                   "is exactly 0.")  # fmt: skip
    if not torch.equal(dropped, expected_dropped):
        for mistake, wrong in mistakes.items():
            if torch.equal(dropped, wrong == INF):
                check.fail(f"the tokens kept are wrong: it looks like you {mistake}.")
        check.fail(
            f"the tokens kept (not -inf), by row, are {_kept(got.masked_fill(dropped, INF))}, "
            f"expected {_kept(expected)}."
        )
    kept = ~expected_dropped
    check.tensor(torch.where(kept, got, 0.0), torch.where(kept, expected, 0.0), what="kept logits")


@exercise(ref.top_k_filter)
def check_top_k_filter(check, top_k_filter):
    known = _row(0.1, 3.0, -1.0, 2.0, 0.5)  # by size: 1, 3, 4, 0, 2
    tied = _row(1.0, 2.0, 0.5, 2.0)  # two tokens tie for the top: k=1 keeps both
    cases = [(known, 2, [[1, 3]]), (known, 1, [[1]]), (known, 5, [[0, 1, 2, 3, 4]])]
    cases += [(tied, 1, [[1, 3]])]
    cases += [(torch.randn(3, 11, generator=seeded(1)) * 3, k, None) for k in (3, 7)]
    for logits, k, kept in cases:
        with check.case(f"{logits.shape[0]}×{logits.shape[1]} logits, k={k}"):
            expected = ref.top_k_filter(logits, k)
            assert kept is None or _kept(expected) == kept  # the answer worked out by hand
            got = check.call(top_k_filter, logits, k)
            below = logits.topk(min(k + 1, logits.shape[-1]), -1).values[:, -1:]
            top = logits.topk(k, -1).indices  # exactly k, whatever the ties
            exactly_k = torch.full_like(logits, INF).scatter(-1, top, logits.gather(-1, top))
            mistakes = {
                "kept the k smallest logits": logits.masked_fill(
                    logits > (-logits).topk(k, -1).values[:, -1:].neg(), INF
                ),
                "kept exactly k tokens: a token tied with the k-th largest is kept too, as the "
                "docstring says (compare with the k-th largest value, not its index)": exactly_k,
            }
            if k < logits.shape[-1]:
                mistakes["kept k + 1 tokens: keep those at least as large as the k-th largest"] = (
                    logits.masked_fill(logits < below, INF)
                )
            _check_filtered(check, got, expected, mistakes)


@exercise(ref.top_p_filter)
def check_top_p_filter(check, top_p_filter):
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])  # by size: 1 (0.5), 3 (0.3), 0, 2
    known = probs.log()
    cases = [
        (known, 0.75, [[1, 3]], "0.5 + 0.3 is the first total ≥ 0.75"),
        (known, 0.45, [[1]], "the top token alone holds 0.5 ≥ 0.45"),
        (
            torch.tensor([[0.25, 0.5, 0.25]]).log(),
            0.5,
            [[1]],
            "the top token alone holds 0.5 ≥ 0.5",
        ),
        (known, 0.9, [[0, 1, 3]], "0.5 + 0.3 + 0.15 is the first total ≥ 0.9"),
        (known, 0.01, [[1]], "the top token is always kept"),
        (known, 1.0, [[0, 1, 2, 3]], "p = 1 keeps every token"),
        # GPT-2's vocabulary: float32's running total of the sorted probabilities reaches 1.0
        # thousands of tokens before the last, so the rule alone drops them at p = 1.
        (
            torch.randn(2, 50_257, generator=seeded(3)) * 3,
            1.0,
            [list(range(50_257))] * 2,
            "p = 1 keeps every one of GPT-2's 50,257 tokens",
        ),
    ]
    cases += [(torch.randn(3, 13, generator=seeded(2)) * 2, p, None, "") for p in (0.3, 0.8)]
    for logits, p, kept, why in cases:
        label = f"{logits.shape[0]}×{logits.shape[1]} logits, p={p}"
        with check.case(label + (f": {why}" if why else "")):
            expected = ref.top_p_filter(logits, p)
            assert kept is None or _kept(expected) == kept  # the answer worked out by hand
            got = check.call(top_p_filter, logits, p)
            fits = isinstance(got, torch.Tensor) and got.shape == logits.shape
            if p >= 1 and fits and (got < -1e8).any():
                check.fail(
                    f"p = 1 keeps every token, yet {int((got < -1e8).sum()):,} of "
                    f"{logits.numel():,} are -inf. With many tokens, float32's running total of "
                    "the sorted probabilities reaches 1.0 before the last of them: return the "
                    "logits as they are when p >= 1."
                )
            if kept is not None and fits:
                if _kept(got) == [[1]] and p == 0.75:
                    check.fail(
                        "you kept only token 1 (probability 0.5): the nucleus is the smallest "
                        "set whose total reaches p, so it includes the token that crosses p."
                    )
                extra = set(_kept(got)[0]) - set(kept[0])
                if len(extra) == 1 and set(kept[0]) < set(_kept(got)[0]):
                    check.fail(
                        "you kept one token too many: stop at the first token that brings "
                        "the total to p or above (drop a token when the tokens before it "
                        "hold p or more: >= p, not > p)."
                    )
            sorted_probs = logits.softmax(-1).sort(-1, descending=True)
            unsorted = logits.softmax(-1).cumsum(-1) - logits.softmax(-1)
            mistakes = {
                "summed the probabilities in vocabulary order: sort them first, largest first": (
                    logits.masked_fill(unsorted >= p, INF)
                ),
                "returned the sorted logits: scatter the mask back to the vocabulary's order": (
                    sorted_probs.values.log().masked_fill(
                        sorted_probs.values.cumsum(-1) - sorted_probs.values >= p, INF
                    )
                ),
            }
            _check_filtered(check, got, expected, mistakes)
