"""Checkers for chapter 5's circuits (solutions/circuits.py).

Models are attention-only with every parameter random, biases included (a zero bias hides
a forgotten bias path), on two shapes: d_model = n_heads·d_head, and one where they differ.
Patterns are random causal patterns, not uniform ones (on a uniform pattern many wrong
diagonals average the same).
"""

import torch

from checks._configs import UNEVEN_HEADS_SMALL_VOCAB
from checks._core import exercise, randomize, seeded
from solutions import circuits as ref
from solutions.attention import w_ov, w_qk
from solutions.config import Config

__all__ = [
    "check_ov_circuit",
    "check_qk_circuit",
    "check_path_expansion_logits",
    "check_induction_score",
    "check_prev_token_score",
    "check_composition_scores",
    "check_ov_copying_score",
]

SQUARE = Config(d_model=32, d_vocab=23, n_ctx=16, d_head=8, d_mlp=64, n_heads=4, n_layers=2)


def _model(cfg: Config, seed: int, n_layers: int = 2) -> ref.AttnOnlyTransformer:
    return randomize(ref.AttnOnlyTransformer(cfg.but(n_layers=n_layers)), seed=seed, scale=0.5)


def _refusing(model: ref.AttnOnlyTransformer) -> ref.AttnOnlyTransformer:
    """The model with its forward, its blocks' and attention's refused: the logits must come
    from the paths, not from running the model. Patterns, embeddings, the unembedding and
    ln1 (the identity) stay allowed."""

    def refuse(*args, **kwargs):
        raise RuntimeError(
            "compute the logits from the paths: do not run the model, a block or attention's "
            "forward (the pattern, from attn.pattern, and the embeddings are fine)"
        )

    for module in [model, *model.blocks, *(b.attn for b in model.blocks)]:
        module.forward = refuse
    return model


def _circuit_check(check, learner, reference, name: str, mistakes_of, shapes_of) -> None:
    for i, (cfg, layer) in enumerate(
        [(SQUARE, 0), (UNEVEN_HEADS_SMALL_VOCAB, 0), (SQUARE, 1), (UNEVEN_HEADS_SMALL_VOCAB, 1)]
    ):
        with check.case(
            f"d_model {cfg.d_model}, {cfg.n_heads} heads of d_head {cfg.d_head}, "
            f"d_vocab {cfg.d_vocab}, layer {layer}"
        ):
            model = _model(cfg, seed=10 + i)
            with torch.no_grad():
                expected = reference(model, layer)
                got = check.call(learner, model, layer, what=name)
            check.tensor(
                got,
                expected,
                what=name,
                mistakes=mistakes_of(model, layer, expected),
                shapes=shapes_of(cfg),
            )


@exercise(ref.ov_circuit)
def check_ov_circuit(check, ov_circuit):
    def mistakes(model, layer, expected):
        attn, W_E, W_U = model.blocks[layer].attn, model.embed.W_E, model.unembed.W_U
        return {
            "transposed it: rows are the source tokens (attended to), columns the output "
            "tokens whose logits rise": expected.transpose(-1, -2),
            "used the other layer's heads": W_E @ w_ov(model.blocks[1 - layer].attn) @ W_U,
            "used W_Q W_Kᵀ: the OV circuit goes through W_V W_O": W_E @ w_qk(attn) @ W_U,
            "read out through W_Eᵀ: logits come from W_U": W_E @ w_ov(attn) @ W_E.T,
        }

    def shapes(cfg):
        return [
            ((cfg.n_heads, cfg.d_model, cfg.d_vocab), "left out W_E: rows are source tokens"),
            ((cfg.n_heads, cfg.d_vocab, cfg.d_model), "left out W_U: columns are output tokens"),
            ((cfg.d_vocab, cfg.d_vocab), "summed (or picked) the heads: keep one matrix per head"),
        ]

    _circuit_check(check, ov_circuit, ref.ov_circuit, "OV circuits", mistakes, shapes)


@exercise(ref.qk_circuit)
def check_qk_circuit(check, qk_circuit):
    def mistakes(model, layer, expected):
        attn, W_E, W_U = model.blocks[layer].attn, model.embed.W_E, model.unembed.W_U
        scale = model.cfg.d_head**0.5
        return {
            "forgot to divide by sqrt(d_head), as the attention scores are": expected * scale,
            "took d_head to be d_model // n_heads: read cfg.d_head": expected
            * scale
            / (model.cfg.d_model // model.cfg.n_heads) ** 0.5,
            "transposed it: rows are the query tokens, columns the key tokens": (
                expected.transpose(-1, -2)
            ),
            "used the other layer's heads": W_E
            @ w_qk(model.blocks[1 - layer].attn)
            @ W_E.T
            / scale,
            "used W_V W_O: the QK circuit goes through W_Q W_Kᵀ": W_E @ w_ov(attn) @ W_E.T / scale,
            "read the keys through W_U: keys are tokens embedded by W_E, so the right factor "
            "is W_Eᵀ": W_E @ w_qk(attn) @ W_U / scale,
        }

    def shapes(cfg):
        return [
            ((cfg.n_heads, cfg.d_vocab, cfg.d_model), "left out W_Eᵀ on the key side"),
            ((cfg.d_vocab, cfg.d_vocab), "summed (or picked) the heads: keep one matrix per head"),
        ]

    _circuit_check(check, qk_circuit, ref.qk_circuit, "QK circuits", mistakes, shapes)


def _path_mistakes(model, tokens) -> dict[str, torch.Tensor]:
    """The logits that a path expansion missing one term gives."""
    attn, W_U, W_E = model.blocks[0].attn, model.unembed.W_U, model.embed.W_E
    W_pos = model.pos_embed.W_pos[: tokens.shape[1]]
    x = model.embed(tokens) + model.pos_embed(tokens)
    pattern = attn.pattern(x)
    ov = w_ov(attn)

    def total(pattern=pattern, tok=True, pos_direct=True, pos_heads=True, b_U=True, b_O=True,
              b_V=True, heads=range(model.cfg.n_heads)):  # fmt: skip
        h = list(heads)
        logits = W_E[tokens] @ W_U + (W_pos @ W_U if pos_direct else 0)
        stream = (W_E[tokens] if tok else 0) + (W_pos if pos_heads else 0)
        values = stream[:, None] @ ov[h][None] @ W_U  # batch n_heads key_posn d_vocab
        logits = logits + torch.einsum("bhqk,bhkv->bqv", pattern[:, h], values)
        if b_U:
            logits = logits + model.unembed.b_U
        if b_O:
            logits = logits + attn.b_O @ W_U
        if b_V:
            logits = logits + torch.einsum("hd,hdm->m", attn.b_V[h], attn.W_O[h]) @ W_U
        return logits

    return {
        "left out the positional paths (W_pos W_U, and W_pos through each head)": total(
            pos_direct=False, pos_heads=False
        ),
        "left out the positional direct path, W_pos W_U": total(pos_direct=False),
        "left out the positions in what the heads read: a head's values come from W_E[token] "
        "+ W_pos at each key": total(pos_heads=False),
        "left out the unembedding's bias b_U": total(b_U=False),
        "left out b_O W_U, attention's output bias": total(b_O=False),
        "left out the value bias: each head adds b_V W_O W_U (its pattern sums to 1)": total(
            b_V=False
        ),
        "left out every bias (b_U, b_O W_U, b_V W_O W_U)": total(b_U=False, b_O=False, b_V=False),
        "used the pattern transposed: row i of a pattern is query i's weights over keys": total(
            pattern=pattern.transpose(-1, -2)
        ),
        "used only head 0": total(heads=[0]),
        "computed the pattern from the token embeddings alone: attention reads the stream, "
        "W_E[token] + W_pos, so attn.pattern(embed(tokens) + pos_embed(tokens))": total(
            pattern=attn.pattern(model.embed(tokens))
        ),
        "gave every key the same weight instead of using the model's pattern": total(
            pattern=torch.tril(torch.ones_like(pattern))
            / torch.tril(torch.ones_like(pattern)).sum(-1, keepdim=True)
        ),
    }


@exercise(ref.path_expansion_logits)
def check_path_expansion_logits(check, path_expansion_logits):
    for i, (cfg, batch, posn) in enumerate(
        [
            (SQUARE, 2, 7),
            (UNEVEN_HEADS_SMALL_VOCAB, 3, UNEVEN_HEADS_SMALL_VOCAB.n_ctx),
            (SQUARE, 1, 1),
        ]
    ):
        with check.case(
            f"one layer, d_model {cfg.d_model}, {cfg.n_heads} heads, batch {batch}, "
            f"{posn} position{'s' * (posn > 1)}"
        ):
            model = _model(cfg, seed=20 + i, n_layers=1)
            tokens = torch.randint(cfg.d_vocab, (batch, posn), generator=seeded(30 + i))
            with torch.no_grad():
                expected = model(tokens)
                mistakes = _path_mistakes(model, tokens)
                got = check.call(path_expansion_logits, _refusing(model), tokens)
            check.tensor(got, expected, what="logits from the paths", mistakes=mistakes)


def _patterns(batch: int, n_heads: int, posn: int, seed: int) -> torch.Tensor:
    """Random causal patterns, peaked enough that every diagonal holds different weights."""
    scores = torch.randn(batch, n_heads, posn, posn, generator=seeded(seed)) * 3
    future = torch.ones(posn, posn, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def _diagonal_mean(pattern, offset, queries=None):
    d = pattern.diagonal(offset=offset, dim1=-2, dim2=-1)
    return (d if queries is None else d[..., -queries:]).mean(dim=(0, -1))


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


@exercise(ref.prev_token_score)
def check_prev_token_score(check, prev_token_score):
    for i, (batch, n_heads, posn) in enumerate([(3, 4, 9), (2, 3, 2), (1, 2, 13), (4, 1, 5)]):
        with check.case(f"batch {batch}, {n_heads} heads, {posn} positions"):
            pattern = _patterns(batch, n_heads, posn, seed=50 + i)
            diagonal = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)
            mistakes = {
                "measured the weight on the query's own position (the main diagonal)": (
                    _diagonal_mean(pattern, 0)
                ),
                "divided by every query, the first too: it has no previous position, so "
                "average over the other posn - 1": diagonal.sum(dim=(0, -1)) / (batch * posn),
            }
            if posn > 2:
                mistakes["measured the weight two positions back"] = _diagonal_mean(pattern, -2)
            check.tensor(
                check.call(prev_token_score, pattern),
                ref.prev_token_score(pattern),
                what="previous-token scores",
                mistakes=mistakes,
                shapes=[((batch, n_heads), "kept the batch axis: average over it too")],
            )


def _score(a, b):
    return torch.linalg.matrix_norm(a @ b) / (
        torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(b)
    )


@exercise(ref.composition_scores)
def check_composition_scores(check, composition_scores):
    for i, cfg in enumerate([SQUARE, UNEVEN_HEADS_SMALL_VOCAB]):
        model = _model(cfg, seed=60 + i)
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
    model = _model(cfg, seed)
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
