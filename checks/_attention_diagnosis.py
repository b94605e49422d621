"""How attention goes wrong: the reference with a known mistake switched on, and
comparisons that say where a learner's scores or pattern differ (above the diagonal,
rows not summing to one, a scale factor), and how a previous-token head goes wrong, for the checkers in checks/attention.py.
"""

import math

import einops
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from checks._compare import require_int as require_int
from checks._configs import NARROW_HEADS
from checks._core import plural, randomize
from solutions import attention as ref
from solutions.config import TINY


def scale_mistakes(scores: Tensor, d_head: int, d_model: int | None = None) -> dict:
    mistakes = {
        "forgot to divide the scores by sqrt(d_head)": scores * math.sqrt(d_head),
        "divided by d_head instead of sqrt(d_head)": scores / math.sqrt(d_head),
        "multiplied by sqrt(d_head) instead of dividing": scores * d_head,
    }
    if d_model is not None and d_model != d_head:
        factor = math.sqrt(d_model / d_head)
        key = (
            f"divided by sqrt(d_model) instead of sqrt(d_head): off by a factor "
            f"sqrt(d_model/d_head) = {factor:.3g}"
        )
        mistakes[key] = scores / factor
    return mistakes


def first_checks(check, got, expected: Tensor, what: str) -> Tensor:
    """None, type, shape and dtype, reported the standard way; NaN reported here."""
    if not isinstance(got, Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
        check.tensor(got, expected, what=what)
    got = got.detach()
    if torch.isnan(got).any():
        rows = torch.isnan(got).any(-1).nonzero()[:, -1].unique().tolist()
        hint = ""
        if rows == [0]:
            hint = (
                " Only the first position is NaN: its single key was masked, so the softmax "
                "saw nothing but -inf. Did you mask the diagonal too?"
            )
        check.fail(f"the {what} holds NaN values (at query positions {rows[:6]}).{hint}")
    return got


def compare_masked(check, got, raw: Tensor, *, what: str, mistakes=None, rtol=1e-4) -> None:
    """`got` must equal `raw` at and below the diagonal and be masked above it: -inf, or so
    far below the row's best visible score that the softmax gives it no weight."""
    expected = ref.apply_causal_mask(raw)
    got = first_checks(check, got, expected, what)
    n = raw.shape[-1]
    above = torch.ones(n, n, dtype=torch.bool).triu(1)
    diag, below = torch.eye(n, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool).tril(-1)
    atol = 1e-5 * max(1.0, raw.abs().max().item())
    blocked = got < expected.max(dim=-1, keepdim=True).values - 80  # e^-80 ≈ 2e-35

    def close(region):
        return torch.allclose(got[..., region], raw[..., region], rtol=rtol, atol=atol)

    if close(below) and close(diag):
        if blocked[..., above].all():
            return
        if close(above):
            check.fail(
                f"the {what} match except above the diagonal, where nothing is masked. "
                "Set every future key (key_posn > query_posn) to -inf before the softmax."
            )
        value = got[..., above][~blocked[..., above]][0].item()
        check.fail(
            f"the {what} match except above the diagonal: check your mask. A future key "
            f"holds {value:.4g}, which the softmax would still weigh. Use -inf (or a "
            "large negative number such as -1e5)."
        )
    if close(below) and blocked[..., diag].all():
        check.fail(
            f"the {what} mask the diagonal too: a query may attend to its own position. "
            "Mask only key_posn > query_posn (torch.triu(..., diagonal=1))."
        )
    if n > 1 and blocked[..., below].all() and not blocked[..., above].all():
        check.fail(
            f"the {what} mask the past and keep the future: mask above the diagonal "
            "(key_posn > query_posn), not below it."
        )
    zero_future = lambda t: t.masked_fill(above, 0)  # noqa: E731
    check.tensor(
        zero_future(got),
        zero_future(expected),
        what=f"kept part of the {what} (at and below the diagonal)",
        mistakes={k: zero_future(v) for k, v in (mistakes or {}).items()},
        rtol=rtol,
    )
    check.fail(f"the {what} are not masked above the diagonal: check your mask.")


def compare_pattern(check, got, expected: Tensor, *, what: str, mistakes: dict, rtol) -> None:
    got = first_checks(check, got, expected, what)
    rows = got.sum(-1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        if torch.allclose(got.sum(-2), torch.ones_like(rows), atol=1e-4):
            check.fail(
                f"each column of the {what} sums to 1, not each row: the softmax ran over "
                "queries. Take it over the keys (the last axis)."
            )
        check.fail(
            f"each row of the {what} should sum to 1 (a distribution over keys); yours "
            f"sum to between {rows.min().item():.4g} and {rows.max().item():.4g}. Take "
            "the softmax over the keys (the last axis), after masking, not before."
        )
    n = got.shape[-1]
    if (got[..., torch.ones(n, n, dtype=torch.bool).triu(1)] > 1e-6).any():
        check.fail(f"the {what} gives weight to future keys (above the diagonal): check your mask.")
    check.tensor(got, expected, what=what, mistakes=mistakes, rtol=rtol)


def forward_with_mistake(
    attn,
    x,
    *,
    scale=None,
    mask="causal",
    fill=float("-inf"),
    softmax_dim=-1,
    mask_after=False,
    mean_heads=False,
    b_O_per_head=False,
    drop=(),
):
    """The reference forward pass with one mistake switched on: (attn_out, pattern, scores)."""
    b = {n: (torch.zeros_like(p) if n in drop else p) for n, p in attn.named_parameters()}
    to_heads = "batch posn d_model, n_heads d_model d_head -> batch posn n_heads d_head"
    q, k, v = (einops.einsum(x, b[f"W_{c}"], to_heads) + b[f"b_{c}"] for c in "QKV")
    scale = scale or math.sqrt(attn.cfg.d_head)
    scores = (
        einops.einsum(q, k, "batch q n_heads d, batch k n_heads d -> batch n_heads q k") / scale
    )
    ones = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool)
    future = {
        "causal": ones.triu(1),
        "diagonal too": ones.triu(0),
        "past": ones.tril(-1),
        "none": ~ones,
    }[mask]
    if not mask_after:
        scores = scores.masked_fill(future, fill)
    pattern = scores.softmax(softmax_dim)
    if mask_after:
        pattern = pattern.masked_fill(future, 0)
    z = einops.einsum(
        pattern, v, "batch n_heads q k, batch k n_heads d_head -> batch q n_heads d_head"
    )
    per_head = ref.per_head_outputs(z, b["W_O"])
    out = per_head.mean(2) if mean_heads else per_head.sum(2)
    return out + b["b_O"] * (per_head.shape[2] if b_O_per_head else 1), pattern, scores


def known_mistakes(cfg) -> dict[str, dict]:
    """Known mistakes in Attention, as switches of `forward_with_mistake`."""
    factor = math.sqrt(cfg.d_model / cfg.d_head)
    return {
        f"scaled the scores by 1/sqrt(d_model) instead of 1/sqrt(d_head): off by a factor "
        f"sqrt(d_model/d_head) = {factor:.3g}": dict(scale=math.sqrt(cfg.d_model)),
        "forgot to scale the scores by 1/sqrt(d_head)": dict(scale=1.0),
        "masked the diagonal too: a query may attend to its own position": dict(
            mask="diagonal too", fill=-1e5
        ),
        "applied no causal mask": dict(mask="none"),
        "masked the past and kept the future (the future is key_posn > query_posn)": dict(
            mask="past"
        ),
        "took the softmax over queries instead of keys (the last axis)": dict(softmax_dim=-2),
        "masked after the softmax: mask the scores, then take the softmax": dict(mask_after=True),
        "averaged the heads' outputs instead of summing them": dict(mean_heads=True),
        "added b_O to every head's output before summing: add it once, after the sum": dict(
            b_O_per_head=True
        ),
        **{f"forgot the bias {name}": dict(drop=(name,)) for name in ["b_Q", "b_K", "b_V", "b_O"]},
    }


def merged_cases(check, learner_fn, reference_fn, name):
    """Yield (cfg, attn, got) for random layers: values checked, rank at most d_head."""
    for i, cfg in enumerate([TINY, NARROW_HEADS, TINY.but(d_head=1, n_heads=2)]):
        attn = randomize(ref.Attention(cfg), seed=60 + i, scale=0.2)
        with check.case(
            f"{name} of a random layer, {plural(cfg.n_heads, 'head')}, d_head {cfg.d_head}"
        ):
            expected = reference_fn(attn)
            transposed = expected.transpose(-1, -2)
            got = check.call(learner_fn, attn, what=name)
            why = "transposed each head's matrix (the two factors in the wrong order)"
            check.tensor(got, expected, what=name, mistakes={why: transposed})
        with check.case(f"{name}: every head's rank is at most d_head = {cfg.d_head}"):
            ranks = torch.linalg.matrix_rank(got.detach())
            if (ranks > cfg.d_head).any():
                check.fail(f"your {name} has ranks {ranks.tolist()}, above d_head.")
        yield cfg, attn, got.detach()


def count_hint(got, expected, wrong_by: dict[str, int]) -> str:
    """The explanation of the first known wrong count that `got` equals, if any."""
    for why, value in wrong_by.items():
        if got == value and value != expected:
            return " " + why
    return ""


def counted_flops(cfg, n: int) -> int:
    """FLOPs that torch counts for one layer's q kᵀ and pattern · v, times n_layers."""
    q, k, v = (torch.randn(1, n, cfg.n_heads, cfg.d_head) for _ in "qkv")
    with FlopCounterMode(display=False) as counter:
        pattern = ref.apply_causal_mask(ref.attention_scores(q, k)).softmax(-1)
        einops.einsum(pattern, v, "b h q k, b k h d -> b q h d")
    return counter.get_total_flops() * cfg.n_layers


def previous_token_mistakes(n: int) -> dict[str, Tensor]:
    """Patterns that learners write for "attend to the previous token", each one wrong."""
    eye = torch.eye(n)
    two_back = torch.nn.functional.one_hot((torch.arange(n) - 2).clamp(min=0), n).float()
    return {
        "left query 0's row empty. Query 0 has no previous token, but its row must still "
        "sum to 1 over the keys it may see: only key 0, itself": torch.diag(torch.ones(n - 1), -1),
        "let query 0 wrap around to the last key (torch.roll wraps), which is in its future. "
        "Query 0 may see only itself: put its weight on key 0": eye.roll(-1, dims=1),
        "put query i's weight on key i, the current token; the previous token is key i-1": eye,
        "put query i's weight on key i+1, the next token, which the causal mask hides": torch.diag(
            torch.ones(n - 1), 1
        ),
        "looked two positions back (off by one): the previous token is key i-1": two_back,
        "looked two positions back (off by one) and left the first rows empty": torch.diag(
            torch.ones(max(n - 2, 0)), -2
        ),
    }


def diagnose_previous_token(check, pattern: Tensor, threshold: float = 0.8) -> None:
    """Fail unless every query i >= 1 puts at least `threshold` of its weight on key i-1."""
    if not torch.isfinite(pattern).all():
        check.fail("the head's pattern holds NaN or infinite values: are W_Q and W_K finite?")
    previous = pattern.diagonal(-1)
    if previous.min() >= threshold:
        return
    current, two_back = pattern.diagonal()[1:].mean(), pattern.diagonal(-2).mean()
    if current > 0.5:
        check.fail(
            f"your head attends to the current token (weight {current:.2f} on key i, on "
            "average). Query i must carry position i-1 and key j position j. If you rotated "
            "forward, or rotated the keys back instead of the queries, query i looks for "
            "position i+1, which the mask hides, and the nearest key it may see is i itself."
        )
    if two_back > 0.5:
        check.fail(
            f"off by one: your head looks two positions back (weight {two_back:.2f} on key "
            "i-2, on average). Rotate each pair by one step, the angle ω_k, not 2·ω_k."
        )
    n = pattern.shape[-1]
    heaviest = pattern[1:].argmax(-1) == torch.arange(n - 1)
    if heaviest.float().mean() > 0.8:
        check.fail(
            f"your head points at the previous token, but weakly: some queries put only "
            f"{previous.min():.2f} of their weight on key i-1. Scale W_Q or W_K up so that "
            "the score of key i-1 stands several units above its neighbours'."
        )
    check.fail(
        f"your head does not look at the previous token: queries put {previous.mean():.2f} "
        "of their weight on key i-1, on average. Query i must carry position i-1 (the "
        "rotation back applied to the fast pairs) and key j its own position j."
    )
