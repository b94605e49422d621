"""Checkers of the induction model's scores: attention patterns, composition, copying."""

import torch

from checks._configs import UNEVEN_HEADS_SMALL_VOCAB
from checks._core import exercise, seeded
from checks.circuits._common import SQUARE, _diagonal_mean, _patterns, random_model
from solutions import circuits as ref
from solutions.attention import w_ov, w_qk
from solutions.config import Config


@exercise(ref.induction_score)
def check_induction_score(check, induction_score):
    for i, (batch, n_heads, half) in enumerate([(3, 4, 5), (2, 3, 8), (1, 2, 2), (4, 1, 6)]):
        with check.case(f"batch {batch}, {n_heads} heads, [bos, s, s] with s of {half} tokens"):
            pattern = _patterns(batch, n_heads, 2 * half + 1, seed=40 + i)
            got = check.call(induction_score, pattern, half)
            mistakes = {
                "measured the weight on the earlier copy of the query's own token (key = "
                "query - half): the induction head looks one further, at the token after it": (
                    _diagonal_mean(pattern, -half, half)
                ),
                "measured the weight on key = query - half - 1: the token after the earlier "
                "copy is at query - half + 1": _diagonal_mean(pattern, -half - 1, half - 1),
                "averaged over every query on that diagonal, the first copy's too: only the "
                "second copy's queries (the last `half`) have an earlier copy": _diagonal_mean(
                    pattern, -(half - 1)
                ),
            }
            check.tensor(
                got,
                ref.induction_score(pattern, half),
                what="induction scores",
                mistakes=mistakes,
                shapes=[((batch, n_heads), "kept the batch axis: average over it too")],
            )


@exercise(ref.attention_pattern_score)
def check_attention_pattern_score(check, attention_pattern_score):
    cases = [(3, 4, 9, 1), (2, 3, 7, 0), (1, 2, 13, 4), (4, 1, 5, 4), (2, 2, 2, 1)]
    for i, (batch, n_heads, posn, offset) in enumerate(cases):
        with check.case(f"batch {batch}, {n_heads} heads, {posn} positions, offset {offset}"):
            pattern = _patterns(batch, n_heads, posn, seed=50 + i)
            diagonal = pattern.diagonal(offset=-offset, dim1=-2, dim2=-1)
            mistakes = {
                "ignored `offset`: measured the previous position whatever it is": (
                    _diagonal_mean(pattern, -1)
                ),
                "took the diagonal above the main one: keys before the query are below it "
                "(key = query - offset), and a causal pattern is zero above": (
                    pattern.diagonal(offset=offset, dim1=-2, dim2=-1).mean(dim=(0, -1))
                ),
                "divided by every query: the first `offset` queries have no key that far back, "
                "so average over the other posn - offset": diagonal.sum(dim=(0, -1))
                / (batch * posn),
            }
            if offset > 0:
                mistakes["measured the weight one position nearer: key = query - offset"] = (
                    _diagonal_mean(pattern, -(offset - 1))
                )
            if offset + 1 < posn:
                mistakes["measured the weight one position further back"] = _diagonal_mean(
                    pattern, -(offset + 1)
                )
            check.tensor(
                check.call(attention_pattern_score, pattern, offset),
                ref.attention_pattern_score(pattern, offset),
                what="attention pattern scores",
                mistakes={
                    k: v
                    for k, v in mistakes.items()
                    if not torch.allclose(v, diagonal.mean((0, -1)))
                },
                shapes=[((batch, n_heads), "kept the batch axis: average over it too")],
            )


def _score(a, b):
    return torch.linalg.matrix_norm(a @ b) / (
        torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(b)
    )


@exercise(ref.composition_scores)
def check_composition_scores(check, composition_scores):
    for i, cfg in enumerate([SQUARE, UNEVEN_HEADS_SMALL_VOCAB]):
        model = random_model(cfg, seed=60 + i)
        attn_0, attn_1 = model.blocks[0].attn, model.blocks[1].attn
        with torch.no_grad():
            ov_0, ov_1, qk_1 = w_ov(attn_0)[:, None], w_ov(attn_1)[None], w_qk(attn_1)[None]
            candidates = {
                "Q": _score(ov_0, qk_1),
                "K": _score(ov_0, qk_1.transpose(-1, -2)),
                "V": _score(ov_0, ov_1),
            }
        for kind in "KQV":
            with check.case(f"{kind}-composition, d_model {cfg.d_model}, {cfg.n_heads} heads"):
                with torch.no_grad():
                    got = check.call(composition_scores, model, kind)
                    expected = ref.composition_scores(model, kind)
                    ov_0_t = ov_0.transpose(-1, -2)
                    reader = {"Q": qk_1, "K": qk_1.transpose(-1, -2), "V": ov_1}[kind]
                    mistakes = {
                        f"computed {other}-composition: for {kind}, layer 1 reads through "
                        + {"Q": "W_QK (its queries)", "K": "W_QKᵀ (its keys)", "V": "W_OV"}[kind]: v
                        for other, v in candidates.items()
                        if other != kind
                    } | {
                        "swapped the layers: rows are layer 0's heads (the writers), columns "
                        "layer 1's (the readers)": expected.T,
                        "multiplied in the paper's column-vector convention: in ours (x W, "
                        "row vectors) W_OV⁰ comes first": _score(reader, ov_0),
                        "transposed W_OV⁰ (the paper's W_OV is the transpose of ours)": _score(
                            ov_0_t, reader
                        ),
                        "forgot to divide by the norms of the two matrices": torch.linalg.matrix_norm(
                            ov_0 @ reader
                        ),
                        "used the spectral norm: the score uses the Frobenius norm": (
                            torch.linalg.matrix_norm(ov_0 @ reader, ord=2)
                            / (
                                torch.linalg.matrix_norm(ov_0, ord=2)
                                * torch.linalg.matrix_norm(reader, ord=2)
                            )
                        ),
                    }
                check.tensor(got, expected, what=f"{kind}-composition scores", mistakes=mistakes)


def _copying_model(cfg: Config, seed: int) -> ref.AttnOnlyTransformer:
    """A random model whose heads copy to different degrees: W_U is W_Eᵀ plus noise, and head
    h's W_OV is c_h R Rᵀ plus noise (c_h from 0 up), so that its copying score lies anywhere
    from near 0 to 1 and a slip changes it. Random weights alone copy no token."""
    model = random_model(cfg, seed)
    gen = seeded(seed + 1)
    noise = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    with torch.no_grad():
        model.unembed.W_U.copy_(model.embed.W_E.T + 0.25 * noise(cfg.d_model, cfg.d_vocab))
        for attn in (block.attn for block in model.blocks):
            for h in range(cfg.n_heads):
                strength = 2 * h / max(cfg.n_heads - 1, 1)
                R = attn.W_V[h]
                attn.W_O[h] = strength * R.T + 0.15 * noise(cfg.d_head, cfg.d_model)
    return model


def _copying_mistakes(model, layer: int, among: list[int] | None) -> dict[str, torch.Tensor]:
    """The scores that the usual slips give (those whose shapes allow them)."""
    d_vocab = model.cfg.d_vocab
    ids = torch.arange(d_vocab) if among is None else torch.tensor(among)
    attn, W_E, W_U = model.blocks[layer].attn, model.embed.W_E, model.unembed.W_U
    diagonal = torch.arange(len(ids))

    def fraction(full, axis=-1, targets=diagonal):
        return (full.argmax(dim=axis) == targets).float().mean(dim=-1)

    restricted = lambda m: W_E[ids] @ m @ W_U[:, ids]  # noqa: E731
    mistakes = {
        "transposed W_OV: ours is W_V W_O (row vectors times W_V, then W_O), so the OV "
        "circuit is W_E W_V W_O W_U": fraction(restricted(w_ov(attn).transpose(-1, -2))),
        "took the argmax over the wrong axis: row s (the source token attended to) is what "
        "the head adds to each output token's logit, so the argmax runs along the row": (
            fraction(restricted(w_ov(attn)), axis=-2)
        ),
        "read the logits out through W_Eᵀ: they come from W_U": fraction(
            W_E[ids] @ w_ov(attn) @ W_E.T[:, ids]
        ),
        "used W_Q W_Kᵀ: the OV circuit goes through W_V W_O": fraction(restricted(w_qk(attn))),
        "used the other layer's heads": fraction(restricted(w_ov(model.blocks[1 - layer].attn))),
        "counted the copied tokens: the score is their fraction, the count divided by the "
        "number of source tokens": fraction(restricted(w_ov(attn))) * len(ids),
    }
    if among is not None:
        full_rows = W_E[ids] @ w_ov(attn) @ W_U
        mistakes |= {
            "took the argmax over every output token: read the rows over the tokens of `among` "
            "only, as the columns of the same matrix": fraction(full_rows, targets=ids),
            "ignored `among`: score only its tokens, rows and columns": fraction(
                W_E @ w_ov(attn) @ W_U, targets=torch.arange(d_vocab)
            ),
            "compared the argmax with the token ids: once the columns are those of `among`, "
            "column k is token among[k], so row k copies when its argmax is k": fraction(
                restricted(w_ov(attn)), targets=ids
            ),
        }
    return mistakes


@exercise(ref.ov_copying_score)
def check_ov_copying_score(check, ov_copying_score):
    cases = [
        (SQUARE, 0, None),
        (SQUARE, 1, [17, 3, 9, 12, 0, 21, 5, 14, 8, 19, 2]),
        (UNEVEN_HEADS_SMALL_VOCAB, 1, None),
        (UNEVEN_HEADS_SMALL_VOCAB, 0, [4, 15, 1, 10, 7, 13, 2, 11]),
    ]
    for i, (cfg, layer, among) in enumerate(cases):
        tokens = "every token" if among is None else f"{len(among)} tokens of `among`"
        with check.case(
            f"d_model {cfg.d_model}, {cfg.n_heads} heads, d_vocab {cfg.d_vocab}, layer {layer}, "
            f"{tokens}"
        ):
            model = _copying_model(cfg, seed=70 + i)
            with torch.no_grad():
                expected = ref.ov_copying_score(model, layer, among)
                got = check.call(ov_copying_score, model, layer, among, what="ov_copying_score")
                mistakes = _copying_mistakes(model, layer, among)
            check.tensor(
                got,
                expected,
                what="copying scores",
                mistakes={k: v for k, v in mistakes.items() if not torch.equal(v, expected)},
                shapes=[((), "averaged over the heads: keep one score per head")],
            )
