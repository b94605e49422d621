"""Chapter 5, second part: circuits, read off the weights of attention-only models.

With no MLP and no LayerNorm, a one-layer model's logits are a sum of paths through its
weights: the direct path W_E W_U, and through each head its OV circuit W_E W_OV W_U,
weighted by the head's pattern, which its QK circuit W_E W_QK W_Eᵀ decides. A two-layer
model adds composition: a head of layer 1 reads what a head of layer 0 wrote. On repeated
random tokens it learns induction: a previous-token head in layer 0 whose output the
induction head of layer 1 reads through its keys (K-composition).
"""

import copy

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from solutions.attention import Attention, w_ov, w_qk
from solutions.config import Config
from solutions.embeddings import Embed, PosEmbed, Unembed

# The chapter's two models: one layer on the offline corpus, tokenised by a BPE of 1024
# tokens (so each d_vocab × d_vocab path matrix holds a million entries), and two layers on
# random tokens that repeat. Weights start wider than GPT-2's 0.02 (made for d_model 768):
# with 64 dimensions, 0.1 trains in a few hundred steps where 0.02 takes thousands.
CORPUS_MODEL = Config(
    d_model=64, d_vocab=1024, n_ctx=64, d_head=16, d_mlp=256, n_heads=4, n_layers=1,
    init_range=0.1,
)  # fmt: skip
INDUCTION_MODEL = Config(
    d_model=64, d_vocab=64, n_ctx=41, d_head=16, d_mlp=256, n_heads=4, n_layers=2,
    init_range=0.1,
)  # fmt: skip


class AttnOnlyBlock(nn.Module):
    """resid_post = resid_pre + attn(resid_pre): no MLP, and no LayerNorm (ln1 is the
    identity), so that every path through the model is linear once the patterns are known."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.Identity()
        self.attn = Attention(cfg)

    def forward(
        self, resid_pre: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        return resid_pre + self.attn(self.ln1(resid_pre))


class AttnOnlyTransformer(nn.Module):
    """The Transformer of chapter 5 without MLPs and LayerNorms: the same module names
    (embed, pos_embed, blocks[i].ln1 and .attn, ln_final, unembed), so the same tools read it."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.blocks = nn.ModuleList([AttnOnlyBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = nn.Identity()
        self.unembed = Unembed(cfg)

    def forward(self, tokens: Int[Tensor, "batch posn"]) -> Float[Tensor, "batch posn d_vocab"]:
        residual = self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


@torch.no_grad()
def attention_patterns(
    model: AttnOnlyTransformer, tokens: Int[Tensor, "batch posn"]
) -> list[Float[Tensor, "batch n_heads query_posn key_posn"]]:
    """Every layer's pattern on `tokens`, layer 0 first."""
    residual, patterns = model.embed(tokens) + model.pos_embed(tokens), []
    for block in model.blocks:
        patterns.append(block.attn.pattern(block.ln1(residual)))
        residual = block(residual)
    return patterns


# --- Path expansion of a one-layer model ----------------------------------------------


def direct_path(model: AttnOnlyTransformer) -> Float[Tensor, "d_vocab d_vocab"]:
    """W_E W_U: row t is what token t adds to the logits at its own position, unchanged by
    any head. A table of bigram logits."""
    return model.embed.W_E @ model.unembed.W_U


def ov_circuit(
    model: AttnOnlyTransformer, layer: int = 0
) -> Float[Tensor, "n_heads d_vocab d_vocab"]:
    """Per head, W_E W_V W_O W_U: row s is what the head adds to the logits when it attends
    (all its weight) to a position holding token s. Source tokens down, output tokens across."""
    return model.embed.W_E @ w_ov(model.blocks[layer].attn) @ model.unembed.W_U


def qk_circuit(
    model: AttnOnlyTransformer, layer: int = 0
) -> Float[Tensor, "n_heads d_vocab d_vocab"]:
    """Per head, W_E W_Q W_Kᵀ W_Eᵀ / sqrt(d_head): entry [q, k] is the score a query holding
    token q gives a key holding token k (positions and biases aside). Queries down, keys across."""
    W_E = model.embed.W_E
    return W_E @ w_qk(model.blocks[layer].attn) @ W_E.T / model.cfg.d_head**0.5


def path_expansion_logits(
    model: AttnOnlyTransformer, tokens: Int[Tensor, "batch posn"]
) -> Float[Tensor, "batch posn d_vocab"]:
    """A one-layer model's logits as a sum of paths, with the model's own patterns.

    Position i gets the direct path of its token and of its position; each head adds its
    pattern-weighted OV paths from every key's token and position; and the biases add a
    constant: b_U, b_O W_U, and b_V W_O W_U per head (a pattern's weights sum to 1).
    """
    attn, W_U = model.blocks[0].attn, model.unembed.W_U
    W_pos = model.pos_embed.W_pos[: tokens.shape[1]]
    pattern = attn.pattern(model.embed(tokens) + model.pos_embed(tokens))
    direct = direct_path(model)[tokens] + W_pos @ W_U
    # What each head would write from each key position, were all its weight there.
    values = ov_circuit(model)[:, tokens] + (W_pos @ w_ov(attn) @ W_U)[:, None]
    heads = einops.einsum(
        pattern,
        values,
        "batch n_heads query_posn key_posn, n_heads batch key_posn d_vocab "
        "-> batch query_posn d_vocab",
    )
    b_V_out = einops.einsum(attn.b_V, attn.W_O, "n_heads d_head, n_heads d_head d_model -> d_model")
    bias = model.unembed.b_U + (attn.b_O + b_V_out) @ W_U
    return direct + heads + bias


def top_entries(matrix: Float[Tensor, "m n"], k: int) -> list[tuple[int, int, float]]:
    """The k largest entries of a matrix as (row, column, value), largest first."""
    values, flat = matrix.flatten().topk(k)
    return [
        (i // matrix.shape[1], i % matrix.shape[1], v)
        for i, v in zip(flat.tolist(), values.tolist(), strict=True)
    ]


def skip_trigrams(
    model: AttnOnlyTransformer, head: int, k: int, among: list[int] | None = None
) -> list[tuple[int, int, int, float]]:
    """Head `head`'s k strongest skip-trigrams "source … query → output" of a one-layer model,
    as (source, query, output, score), strongest first, all three tokens from `among`
    (default: every token), the query a token other than the source.

    A source's score adds how much more its best query attends to it than to an average key,
    and how much more attending to it raises its best output than an average logit: a bound
    on what the trigram can add, not a probability.
    """
    ids = torch.arange(model.cfg.d_vocab) if among is None else torch.tensor(among)
    # A logit or an attention score counts only against the others of its row (softmax).
    qk = qk_circuit(model)[head]
    ov = ov_circuit(model)[head]
    qk = (qk - qk.mean(dim=-1, keepdim=True))[ids][:, ids]
    ov = (ov - ov.mean(dim=-1, keepdim=True))[ids][:, ids]
    # A query holding the source token itself is mostly the head attending to its own
    # position: a bigram, which the direct path also reads, not a skip-trigram.
    qk = qk.masked_fill(torch.eye(len(ids), dtype=torch.bool), float("-inf"))
    best_query, best_output = qk.max(dim=0), ov.max(dim=-1)  # per source token (a column of qk)
    values, sources = (best_query.values + best_output.values).topk(k)
    return [
        (int(ids[s]), int(ids[best_query.indices[s]]), int(ids[best_output.indices[s]]), v)
        for s, v in zip(sources.tolist(), values.tolist(), strict=True)
    ]


# --- Induction ------------------------------------------------------------------------


def repeated_tokens(
    batch: int, half: int, d_vocab: int, generator: torch.Generator
) -> Int[Tensor, "batch posn"]:
    """[bos, s, s] for batch random sequences s of `half` tokens: token 0 is bos, s is
    drawn from the others. Length 2·half + 1."""
    s = torch.randint(1, d_vocab, (batch, half), generator=generator)
    return torch.cat([torch.zeros(batch, 1, dtype=s.dtype), s, s], dim=1)


def periodic_tokens(
    batch: int, n_ctx: int, d_vocab: int, generator: torch.Generator, periods: tuple[int, int]
) -> Int[Tensor, "batch posn"]:
    """[bos, s, s, s, ...] cut to n_ctx tokens, s random with a period drawn per sequence
    from periods (low, high inclusive). A period that varies leaves no position at which
    a fixed offset is the answer: only attending by content (induction) predicts the repeats."""
    period = torch.randint(periods[0], periods[1] + 1, (batch, 1), generator=generator)
    s = torch.randint(1, d_vocab, (batch, periods[1]), generator=generator)
    where = torch.arange(n_ctx - 1) % period  # position in its period, per sequence
    return torch.cat([torch.zeros(batch, 1, dtype=s.dtype), s.gather(1, where)], dim=1)


def attention_pattern_score(
    pattern: Float[Tensor, "batch n_heads query_posn key_posn"], offset: int
) -> Float[Tensor, " n_heads"]:
    """Each head's mean weight on the key `offset` positions before its query, over every
    query that has one (and the batch)."""
    return pattern.diagonal(offset=-offset, dim1=-2, dim2=-1).mean(dim=(0, -1))


def prev_token_score(
    pattern: Float[Tensor, "batch n_heads query_posn key_posn"],
) -> Float[Tensor, " n_heads"]:
    """Each head's mean weight on the previous position, over every query that has one."""
    return attention_pattern_score(pattern, 1)


def induction_score(
    pattern: Float[Tensor, "batch n_heads query_posn key_posn"], half: int
) -> Float[Tensor, " n_heads"]:
    """On [bos, s, s] with s of `half` tokens (`repeated_tokens`), each head's mean weight,
    over the second copy's queries (and the batch), on the token after the query's earlier
    copy."""
    # Query half + k holds s[k-1]; its earlier copy is at k, and the token after it at k + 1.
    stripe = pattern.diagonal(offset=-(half - 1), dim1=-2, dim2=-1)
    return stripe[..., -half:].mean(dim=(0, -1))


def composition_scores(model: AttnOnlyTransformer, kind: str) -> Float[Tensor, "n_heads n_heads"]:
    """How much each head of layer 1 reads what each head of layer 0 writes, in [0, 1].

    Entry [h0, h1] is ||W_OV⁰ M||_F / (||W_OV⁰||_F ||M||_F), with M the matrix through which
    layer 1's head h1 reads the stream: W_QKᵀ for its keys ("K"), W_QK for its queries
    ("Q"), W_OV for its values ("V"). In our row-vector convention a key stream x + y W_OV⁰
    is scored as q W_QK (x + y W_OV⁰)ᵀ: the product that counts is W_OV⁰ W_QKᵀ.
    """
    ov_0 = w_ov(model.blocks[0].attn)[:, None]  # n_heads (of layer 0), 1, d_model, d_model
    reader = {
        "Q": w_qk(model.blocks[1].attn),
        "K": w_qk(model.blocks[1].attn).transpose(-1, -2),
        "V": w_ov(model.blocks[1].attn),
    }[kind][None]
    frobenius = lambda m: m.pow(2).sum(dim=(-2, -1)).sqrt()  # noqa: E731
    return frobenius(ov_0 @ reader) / (frobenius(ov_0) * frobenius(reader))


def composed_qk_circuit(
    model: AttnOnlyTransformer, prev_head: int, head: int
) -> Float[Tensor, "d_vocab d_vocab"]:
    """The QK circuit of layer 1's `head` through layer 0's `prev_head` on the key side
    (K-composition), W_E W_QK¹ (W_E W_OV⁰)ᵀ / sqrt(d_head): entry [q, k] is the score a
    query holding token q gives a key into whose stream prev_head wrote token k (having put
    all its weight on it). For an induction head fed by a previous-token head, k is the
    token before the key: the diagonal is "attend where the previous token is mine"."""
    W_E = model.embed.W_E
    written = W_E @ w_ov(model.blocks[0].attn)[prev_head]  # d_vocab d_model, into the key
    return W_E @ w_qk(model.blocks[1].attn)[head] @ written.T / model.cfg.d_head**0.5


def composition_baseline(cfg: Config, kind: str, samples: int = 20, seed: int = 0) -> float:
    """The mean composition score of untrained two-layer models (weights normal and
    independent): what a score means when nothing was learned."""
    with torch.random.fork_rng():  # leaves the caller's random state as it was
        torch.manual_seed(seed)
        with torch.no_grad():
            scores = [composition_scores(AttnOnlyTransformer(cfg), kind) for _ in range(samples)]
    return torch.stack(scores).mean().item()


def ov_copying_score(
    model: AttnOnlyTransformer, layer: int = 0, among: list[int] | None = None
) -> Float[Tensor, " n_heads"]:
    """Per head, the fraction of source tokens s (from `among`, default all) whose row of the
    OV circuit W_E W_OV W_U, read over the same tokens, is largest at s itself: attending to
    s raises the logit of s above every other. 1 for a head that copies every token."""
    ids = torch.arange(model.cfg.d_vocab) if among is None else torch.tensor(among)
    # Only the rows and columns of `among`: d_vocab² entries per head can be too many to form.
    W_E, W_U = model.embed.W_E[ids], model.unembed.W_U[:, ids]
    ov = W_E @ w_ov(model.blocks[layer].attn) @ W_U  # n_heads source output
    return (ov.argmax(dim=-1) == torch.arange(len(ids))).float().mean(dim=-1)


def zero_ablated(model: AttnOnlyTransformer, heads: list[tuple[int, int]]) -> AttnOnlyTransformer:
    """A copy of `model` in which each (layer, head) of `heads` writes nothing: its W_O is
    zero, so neither its values nor its value bias reach the stream."""
    ablated = copy.deepcopy(model)
    with torch.no_grad():
        for layer, head in heads:
            ablated.blocks[layer].attn.W_O[head] = 0
    return ablated
