"""Checkers of the path expansion of a one-layer model and its skip-trigrams."""

import torch

from checks._configs import UNEVEN_HEADS_SMALL_VOCAB
from checks._core import exercise, seeded
from checks.circuits._common import SQUARE, random_model
from solutions import circuits as ref
from solutions.attention import w_ov


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
            model = random_model(cfg, seed=20 + i, n_layers=1)
            tokens = torch.randint(cfg.d_vocab, (batch, posn), generator=seeded(30 + i))
            with torch.no_grad():
                expected = model(tokens)
                mistakes = _path_mistakes(model, tokens)
                got = check.call(path_expansion_logits, _refusing(model), tokens)
            check.tensor(got, expected, what="logits from the paths", mistakes=mistakes)


def _trigram_model(cfg, seed: int) -> ref.AttnOnlyTransformer:
    """A random one-layer model whose heads attend most to their own token (W_K near W_Q),
    as trained heads often do: so that a source's best query is often the source itself."""
    model = random_model(cfg, seed, n_layers=1)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.W_K.copy_(attn.W_Q + 0.5 * torch.randn(attn.W_K.shape, generator=seeded(seed + 1)))
    return model


def _trigrams(model, head, k, among, *, self_query=False, centre=True, qk_axis=0,
              swap=False, ids_out=True) -> list[tuple[int, int, int]]:  # fmt: skip
    """The (source, query, output) triples that a skip_trigrams with one slip returns."""
    ids = torch.arange(model.cfg.d_vocab) if among is None else torch.tensor(among)
    qk, ov = ref.qk_circuit(model)[head], ref.ov_circuit(model)[head]
    if swap:
        qk, ov = ov, qk
    if centre:
        qk, ov = qk - qk.mean(-1, keepdim=True), ov - ov.mean(-1, keepdim=True)
    qk, ov = qk[ids][:, ids], ov[ids][:, ids]
    if not self_query:
        qk = qk.masked_fill(torch.eye(len(ids), dtype=torch.bool), float("-inf"))
    query, output = qk.max(dim=qk_axis), ov.max(dim=-1)
    sources = (query.values + output.values).topk(k).indices
    name = ids if ids_out else torch.arange(len(ids))
    return [
        (int(name[s]), int(name[query.indices[s]]), int(name[output.indices[s]]))
        for s in sources.tolist()
    ]


_TRIGRAM_SLIPS = {
    "let the query be the source token itself: leave q = s out (the diagonal of the QK "
    "circuit), a head attending to its own position is a bigram": dict(self_query=True),
    "did not centre the rows: a logit or an attention score counts only against the rest of "
    "its row, so subtract each row's mean (over every token) first": dict(centre=False),
    "took each query's best key: the source is a key, so a source's best query is the "
    "largest entry of its column of the QK circuit (rows are queries)": dict(qk_axis=-1),
    "swapped the circuits: the QK circuit says which query attends to the source, the OV "
    "circuit what attending to it raises": dict(swap=True),
    "returned positions in `among`, not token ids: map each index back through `among`": dict(
        ids_out=False
    ),
}


@exercise(ref.skip_trigrams)
def check_skip_trigrams(check, skip_trigrams):
    cases = [
        (SQUARE, 1, 5, None),
        (SQUARE, 3, 4, [17, 3, 9, 12, 0, 21, 5, 14, 8, 19, 2]),
        (UNEVEN_HEADS_SMALL_VOCAB, 0, 6, None),
        (UNEVEN_HEADS_SMALL_VOCAB, 2, 3, [4, 15, 1, 10, 7, 13, 2, 11]),
    ]
    for i, (cfg, head, k, among) in enumerate(cases):
        tokens = "every token" if among is None else f"{len(among)} tokens of `among`"
        with check.case(f"d_vocab {cfg.d_vocab}, head {head} of {cfg.n_heads}, k {k}, {tokens}"):
            model = _trigram_model(cfg, seed=80 + i)
            with torch.no_grad():
                expected = ref.skip_trigrams(model, head, k, among)
                got = check.call(skip_trigrams, model, head, k, among, what="skip_trigrams")
            if not isinstance(got, list | tuple) or len(got) != k:
                check.fail(f"return a list of k = {k} tuples (source, query, output, score).")
            if not all(isinstance(t, tuple | list) and len(t) == 4 for t in got):
                check.fail("each skip-trigram is a tuple (source, query, output, score).")
            triples = [tuple(int(x) for x in t[:3]) for t in got]
            if triples != [t[:3] for t in expected]:
                for slip, switches in _TRIGRAM_SLIPS.items():
                    with torch.no_grad():
                        if triples == _trigrams(model, head, k, among, **switches):
                            check.fail(f"the skip-trigrams are wrong: it looks like you {slip}.")
                check.equal(triples, [t[:3] for t in expected], what="(source, query, output)")
            check.tensor(
                torch.tensor([float(t[3]) for t in got]),
                torch.tensor([t[3] for t in expected]),
                what="scores (best query's centred attention score plus best output's centred logit)",
            )
