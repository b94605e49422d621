"""How `scaled_dot_product_attention` goes wrong: its cases (extra batch axes, one query,
more keys than queries, d_v unlike d_k, masks of either shape, large scores), the reference
with a known mistake switched on, and the verdict on a query whose keys are all masked.
"""

import math

import einops
import torch
from torch import Tensor

from checks._cases import plural, scaled, seeded

# (batch axes, queries, keys, d_k, d_v, mask, input scale). mask: "none" (no mask passed),
# "causal" (one [queries, keys] mask broadcast over the batch axes), "random" (a full mask,
# every query left at least one key). Inputs ×300 give scores of order 1e5, where a mask of
# -1e4 still lets future keys through.
CASES = [
    ((), 1, 1, 4, 4, "none", 1.0),
    ((2,), 5, 5, 8, 8, "causal", 1.0),
    ((2, 3), 1, 7, 16, 5, "random", 1.0),
    ((3,), 6, 9, 12, 4, "random", 1.0),
    ((4,), 7, 7, 8, 8, "none", 1.0),
    ((2, 2), 4, 4, 8, 8, "random", 0.01),
    ((4,), 6, 6, 16, 16, "causal", 300.0),
]


def describe(batch, n_q, n_k, d_k, d_v, mask, scale) -> str:
    axes = f"batch axes {batch}" if batch else "no batch axis"
    masks = {"none": "no mask", "causal": "a causal [queries, keys] mask", "random": "a mask"}
    return (
        f"{axes}, {plural(n_q, 'query', 'queries')}, {plural(n_k, 'key')}, d_k {d_k}, "
        f"d_v {d_v}, {masks[mask]}" + scaled("inputs", scale)
    )


def inputs(i, batch, n_q, n_k, d_k, d_v, mask, scale):
    """Seeded (Q, K, V, mask or None) for one case."""
    gen = seeded(200 + i)
    Q = torch.randn(*batch, n_q, d_k, generator=gen) * scale
    K = torch.randn(*batch, n_k, d_k, generator=gen) * scale
    V = torch.randn(*batch, n_k, d_v, generator=gen)
    if mask == "none":
        return Q, K, V, None
    if mask == "causal":
        return Q, K, V, torch.ones(n_q, n_k, dtype=torch.bool).tril()
    allowed = torch.rand(*batch, n_q, n_k, generator=gen) < 0.6
    first = torch.randint(n_k, (*batch, n_q, 1), generator=gen)
    return Q, K, V, allowed.scatter(-1, first, True)


def mistaken(
    Q,
    K,
    V,
    mask,
    scale=None,
    softmax_dim=-1,
    invert=False,
    fill=-math.inf,
    after=False,
    ignore=False,
    transpose=False,
):
    """The reference's output with one mistake switched on (each keyword one switch)."""
    scores = einops.einsum(Q, K, "... q d, ... k d -> ... q k")
    if transpose:
        scores = scores.transpose(-1, -2)
    scores = scores / (math.sqrt(Q.shape[-1]) if scale is None else scale)
    if mask is not None and not ignore:
        mask = ~mask if invert else mask
        if not after:
            scores = scores.masked_fill(~mask, fill)
    pattern = scores.softmax(softmax_dim).nan_to_num(0.0)
    if mask is not None and not ignore and after:
        pattern = pattern.masked_fill(~mask, 0.0)
    return einops.einsum(pattern, V, "... q k, ... k d -> ... q d")


def mistakes(Q, K, V, mask) -> dict[str, Tensor]:
    d_k, d_v, n_q, n_k = Q.shape[-1], V.shape[-1], Q.shape[-2], K.shape[-2]
    wrong = {
        "forgot to divide the scores by sqrt(d_k)": dict(scale=1.0),
        "divided the scores by d_k instead of sqrt(d_k)": dict(scale=d_k),
    }
    if d_v != d_k:
        wrong["divided by sqrt(d_v) (V's last axis) instead of sqrt(d_k)"] = dict(
            scale=math.sqrt(d_v)
        )
    if n_q > 1 and n_q == n_k:
        wrong["took the softmax over the queries instead of the keys (the last axis)"] = dict(
            softmax_dim=-2
        )
        wrong["computed K Qᵀ instead of Q Kᵀ: row i must hold query i's scores"] = dict(
            transpose=True
        )
    if mask is not None:
        wrong |= {
            "inverted the mask: True means the query MAY attend to that key": dict(invert=True),
            "ignored the mask": dict(ignore=True),
            "masked after the softmax: set the scores to -inf first, then take the softmax, "
            "so that each row sums to 1 over the keys it may see": dict(after=True),
            "masked with -1e4: scores this large still outweigh it, so masked keys get "
            "weight. Use -inf (or the dtype's most negative number)": dict(fill=-1e4),
        }
    out = {why: mistaken(Q, K, V, mask, **kw) for why, kw in wrong.items()}
    reference = mistaken(Q, K, V, mask)
    return {why: w for why, w in out.items() if not torch.allclose(w, reference, atol=1e-4)}


def fully_masked_inputs():
    """Q, K, V and a mask under which query 2 of sequence 0 and query 0 of sequence 1 may
    attend to nothing."""
    gen = seeded(250)
    Q, K = torch.randn(2, 4, 8, generator=gen), torch.randn(2, 6, 8, generator=gen)
    V = torch.randn(2, 6, 5, generator=gen)
    mask = torch.rand(2, 4, 6, generator=gen) < 0.6
    mask[..., 0] = True
    mask[0, 2], mask[1, 0] = False, False
    return Q, K, V, mask


def diagnose_fully_masked(check, got, V, mask, expected) -> Tensor:
    """Fail with the reason if the rows with no key allowed are not zeros; return `got`."""
    empty = ~mask.any(-1)
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        check.tensor(got, expected, what="output")
    got = got.detach()
    rows = got[empty]
    if torch.isnan(rows).any():
        check.fail(
            "a query whose keys are all masked gives NaN: the softmax of a row of only -inf "
            "is 0/0. Such a query has nothing to read: return zeros there, as "
            "F.scaled_dot_product_attention does (torch.nan_to_num on the pattern, or "
            "torch.where on mask.any(-1))."
        )
    uniform = V.mean(-2, keepdim=True).expand_as(got)[empty]
    if torch.allclose(rows, uniform, atol=1e-5):
        check.fail(
            "a query whose keys are all masked averages every value: a finite mask value "
            "(-1e9, finfo.min) leaves all its scores equal, so the softmax spreads its weight "
            "over keys it may not see. Return zeros for such a query, as "
            "F.scaled_dot_product_attention does."
        )
    return got
