"""Chapter 2: attention, the only layer that moves information between positions.

Each head scores every earlier position's key against the current position's query
(`attention_scores`, `apply_causal_mask`), turns the scores into a pattern with a softmax
over keys, and writes the pattern-weighted sum of values into the stream through W_O.
`scaled_dot_product_attention` is that computation on its own, for any mask, as PyTorch
and Stanford's CS336 have it; `Attention.forward` calls it.
Local names follow TransformerLens's hooks: q, k, v, attn_scores, pattern, z, attn_out.
"""

import math
import zlib

import einops
import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from solutions.config import TINY, Config


def single_head_scores(
    q: Float[Tensor, "query_posn d_head"], k: Float[Tensor, "key_posn d_head"]
) -> Float[Tensor, "query_posn key_posn"]:
    """Every query against every key, q·k / sqrt(d_head): row i holds query i's scores."""
    # A dot product of d_head terms has a spread growing like sqrt(d_head); dividing by it
    # keeps the softmax out of saturation however wide the head is.
    return q @ k.T / q.shape[-1] ** 0.5


def attention_scores(
    q: Float[Tensor, "batch query_posn n_heads d_head"],
    k: Float[Tensor, "batch key_posn n_heads d_head"],
) -> Float[Tensor, "batch n_heads query_posn key_posn"]:
    """`single_head_scores` for every head of every sequence at once."""
    scores = einops.einsum(
        q,
        k,
        "batch query_posn n_heads d_head, batch key_posn n_heads d_head "
        "-> batch n_heads query_posn key_posn",
    )
    return scores / q.shape[-1] ** 0.5


def apply_causal_mask(
    attn_scores: Float[Tensor, "batch n_heads query_posn key_posn"],
) -> Float[Tensor, "batch n_heads query_posn key_posn"]:
    """The scores with every future key (key_posn > query_posn) set to -inf.

    -inf makes the softmax give those keys exactly zero weight, however large the other
    scores are. Its one danger, a row whose keys are all masked (softmax gives NaN), cannot
    arise: a query always sees its own key. ARENA and TransformerLens's HookedTransformer mask
    with -inf too (their early versions wrote -1e5, HuggingFace writes the dtype's most
    negative number: the same pattern while real scores stay far above it).
    """
    n = attn_scores.shape[-1]
    future = torch.ones(n, n, dtype=torch.bool, device=attn_scores.device).triu(diagonal=1)
    return attn_scores.masked_fill(future, float("-inf"))


def scaled_dot_product_attention(
    Q: Float[Tensor, "... queries d_k"],
    K: Float[Tensor, "... keys d_k"],
    V: Float[Tensor, "... keys d_v"],
    mask: Bool[Tensor, "... queries keys"] | None = None,
) -> Float[Tensor, "... queries d_v"]:
    """softmax(Q Kᵀ / sqrt(d_k)) V over the keys, each query reading only the keys its row of
    `mask` allows (True = may attend, as in CS336 and F.scaled_dot_product_attention's
    boolean attn_mask; it broadcasts against the scores). No mask: every key.

    A query whose keys are all masked reads nothing: its output is zeros, as PyTorch's
    F.scaled_dot_product_attention gives, not the NaN that a softmax over only -inf makes.
    """
    scores = einops.einsum(Q, K, "... queries d_k, ... keys d_k -> ... queries keys")
    scores = scores / Q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    # nan_to_num leaves every weight alone except the NaN of an all-masked row.
    pattern = scores.softmax(dim=-1).nan_to_num(0.0)
    return einops.einsum(pattern, V, "... queries keys, ... keys d_v -> ... queries d_v")


def to_heads(
    x: Float[Tensor, "batch posn d_model"],
    W: Float[Tensor, "n_heads d_model d_head"],
    b: Float[Tensor, "n_heads d_head"],
) -> Float[Tensor, "batch posn n_heads d_head"]:
    """x W + b in every head: the queries (W = W_Q, b = b_Q), keys or values of every position."""
    per_head = "batch posn d_model, n_heads d_model d_head -> batch posn n_heads d_head"
    return einops.einsum(x, W, per_head) + b


class Attention(nn.Module):
    """Causal multi-head self-attention: n_heads heads read the stream and add to it."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        h, d, d_head = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, d, d_head))
        self.W_K = nn.Parameter(torch.empty(h, d, d_head))
        self.W_V = nn.Parameter(torch.empty(h, d, d_head))
        self.W_O = nn.Parameter(torch.empty(h, d_head, d))
        self.b_Q = nn.Parameter(torch.zeros(h, d_head))
        self.b_K = nn.Parameter(torch.zeros(h, d_head))
        self.b_V = nn.Parameter(torch.zeros(h, d_head))
        self.b_O = nn.Parameter(torch.zeros(d))
        for W in (self.W_Q, self.W_K, self.W_V, self.W_O):
            nn.init.normal_(W, std=cfg.init_range)

    def attn_scores(
        self, normalized_resid_pre: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch n_heads query_posn key_posn"]:
        """Scaled, masked scores: what the softmax turns into the pattern."""
        q = to_heads(normalized_resid_pre, self.W_Q, self.b_Q)
        k = to_heads(normalized_resid_pre, self.W_K, self.b_K)
        return apply_causal_mask(attention_scores(q, k))

    def pattern(
        self, normalized_resid_pre: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch n_heads query_posn key_posn"]:
        """Where each head looks: a distribution over keys for every query (rows sum to 1)."""
        return self.attn_scores(normalized_resid_pre).softmax(dim=-1)

    def forward(
        self, normalized_resid_pre: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        """attn_out: each head's pattern-weighted values through its W_O, summed, plus b_O."""
        q, k, v = (
            to_heads(normalized_resid_pre, W, b).transpose(1, 2)  # heads first
            for W, b in [(self.W_Q, self.b_Q), (self.W_K, self.b_K), (self.W_V, self.b_V)]
        )
        posn = normalized_resid_pre.shape[1]
        causal = torch.ones(posn, posn, dtype=torch.bool, device=q.device).tril()
        z = scaled_dot_product_attention(q, k, v, causal)
        # Summing over heads here is the same as concatenating the z's and multiplying by
        # one (n_heads·d_head, d_model) matrix: see `concat_heads_then_project`.
        attn_out = einops.einsum(
            z, self.W_O, "batch n_heads posn d_head, n_heads d_head d_model -> batch posn d_model"
        )
        return attn_out + self.b_O


def concat_heads_then_project(
    z: Float[Tensor, "batch posn n_heads d_head"], W_O: Float[Tensor, "n_heads d_head d_model"]
) -> Float[Tensor, "batch posn d_model"]:
    """The textbook form: lay the heads' z side by side, then one matmul with W_O stacked."""
    z_cat = einops.rearrange(z, "batch posn n_heads d_head -> batch posn (n_heads d_head)")
    W_O_cat = einops.rearrange(W_O, "n_heads d_head d_model -> (n_heads d_head) d_model")
    return z_cat @ W_O_cat


def per_head_outputs(
    z: Float[Tensor, "batch posn n_heads d_head"], W_O: Float[Tensor, "n_heads d_head d_model"]
) -> Float[Tensor, "batch posn n_heads d_model"]:
    """What each head writes into the stream on its own, z[h] @ W_O[h]: they add up."""
    return einops.einsum(
        z, W_O, "batch posn n_heads d_head, n_heads d_head d_model -> batch posn n_heads d_model"
    )


def w_qk(attn: Attention) -> Float[Tensor, "n_heads d_model d_model"]:
    """Per head, W_QK = W_Q W_Kᵀ: query i scores key j by x_i W_QK x_jᵀ (biases aside)."""
    return attn.W_Q @ attn.W_K.transpose(-1, -2)


def w_ov(attn: Attention) -> Float[Tensor, "n_heads d_model d_model"]:
    """Per head, W_OV = W_V W_O: what an attended position's stream becomes in the output."""
    return attn.W_V @ attn.W_O


def head_output_with_frozen_pattern(
    attn: Attention,
    head: int,
    normalized_resid_pre: Float[Tensor, "batch posn d_model"],
    pattern: Float[Tensor, "batch query_posn key_posn"],
) -> Float[Tensor, "batch posn d_model"]:
    """What one head writes into the stream when its pattern is given, not computed.

    With the pattern fixed the head is affine in the stream: pattern · (x W_V + b_V) · W_O.
    b_O is left out: it belongs to the layer and is added once, after summing the heads.
    """
    v = normalized_resid_pre @ attn.W_V[head] + attn.b_V[head]
    return pattern @ v @ attn.W_O[head]


def kv_cache_bytes(cfg: Config, n_tokens: int, bytes_per_value: int = 4) -> int:
    """Bytes to keep the keys and values of n_tokens positions, every head of every layer."""
    return 2 * cfg.n_layers * cfg.n_heads * cfg.d_head * n_tokens * bytes_per_value


def attention_flops(cfg: Config, n_ctx: int) -> int:
    """FLOPs of the two n_ctx × n_ctx products, q kᵀ and pattern · v, in every head and layer.

    Convention: a multiply-add is 2 FLOPs, so each product costs 2·n_ctx²·d_head per head.
    The whole square is counted, as a dense kernel computes it (a causal kernel may skip
    about half). The projections by W_Q, W_K, W_V, W_O grow only linearly with n_ctx and
    are not counted here.
    """
    return cfg.n_layers * cfg.n_heads * 2 * (2 * n_ctx * n_ctx * cfg.d_head)


# --- Heads set by hand -------------------------------------------------------------------
# No trained model exists yet at this point of the course, so these heads get their
# weights by hand: the pattern shapes trained models are known for, and how a W_QK
# produces each one; then a second layer whose head reads what the first one wrote.

HANDMADE = TINY.but(d_model=64, d_head=16, n_layers=2)
HANDMADE_HEADS = ["previous token", "diagonal band", "first token", "same word"]
# The toy stream's subspaces: position (fast and slow sine/cosine pairs), the word, and a
# slot left empty for layer 0 to write the previous word into.
FAST, SLOW, WORD, PREV_WORD = slice(0, 16), slice(16, 32), slice(32, 48), slice(48, 64)


def toy_frequencies(cfg: Config = HANDMADE) -> Tensor:
    """The angle per position of each (sin, cos) pair of `toy_stream`, fastest first."""
    return cfg.n_ctx ** (-torch.arange(16) / 16)


def toy_stream(words: list[str], cfg: Config = HANDMADE) -> Float[Tensor, "posn d_model"]:
    """A residual stream for a list of words: dimensions 0-31 say where (position p's pair k
    is sin(p·ω_k), cos(p·ω_k)), 32-47 say what (a fixed random unit vector per word), and
    48-63 are empty."""
    angles = torch.arange(len(words))[:, None] * toy_frequencies(cfg)
    where = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)
    what = torch.stack([word_code(w) for w in words])
    return torch.cat([where, what, torch.zeros(len(words), cfg.d_model - 48)], dim=-1)


def word_code(word: str) -> Float[Tensor, " d_head"]:
    """The unit vector that stands for `word` in the WORD slot of the toy stream."""
    code = torch.randn(16, generator=torch.Generator().manual_seed(zlib.crc32(word.encode())))
    return code / code.norm()


def previous_token_pattern(n_posn: int) -> Float[Tensor, "query_posn key_posn"]:
    """The ideal previous-token pattern: query i puts all its weight on key i-1.

    Query 0 has no previous token and may see only itself: its row puts its weight on key
    0, so that every row stays a distribution over the keys it may see.
    """
    previous = (torch.arange(n_posn) - 1).clamp(min=0)
    return torch.nn.functional.one_hot(previous, n_posn).float()


def previous_token_qk(
    cfg: Config = HANDMADE,
) -> tuple[Float[Tensor, "d_model d_head"], Float[Tensor, "d_model d_head"]]:
    """W_Q and W_K of a head that looks one position back in `toy_stream`.

    Query i carries position i-1 and key j its own position j, both read from the 8 fast
    pairs: the score peaks where j = i-1. Moving a (sin, cos) pair back by one position is
    a fixed rotation by -ω_k, so W_Q is a block of 2×2 rotations; the factor 4 sharpens
    the peak (scores at neighbouring keys fall about 5 below it, so they get under 1% weight).
    """
    W_Q, W_K = torch.zeros(2, cfg.d_model, cfg.d_head)
    for k, w in enumerate(toy_frequencies(cfg)[:8].tolist()):
        # [sin pω, cos pω] @ [[cos ω, sin ω], [-sin ω, cos ω]] = [sin (p-1)ω, cos (p-1)ω]
        back = torch.tensor([[math.cos(w), math.sin(w)], [-math.sin(w), math.cos(w)]])
        W_Q[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = 4 * back
    W_K[FAST] = 4 * torch.eye(16)
    return W_Q, W_K


def handmade_attention(cfg: Config = HANDMADE) -> Attention:
    """Layer 0: four heads with the four pattern shapes of HANDMADE_HEADS. The
    previous-token head also writes the word it attends to into the PREV_WORD slot."""
    attn = Attention(cfg)
    eye = torch.eye(16)
    with torch.no_grad():
        for p in attn.parameters():
            p.zero_()
        # Previous token: query i carries position i-1, keys carry their own position...
        attn.W_Q[0], attn.W_K[0] = previous_token_qk(cfg)
        # ...and its OV circuit moves the attended word from WORD to PREV_WORD.
        attn.W_V[0, WORD], attn.W_O[0, :, PREV_WORD] = eye, eye
        # Diagonal band: a query matches its own position, loosely, via slow frequencies.
        attn.W_Q[1, SLOW], attn.W_K[1, SLOW] = 3.5 * eye, 3.5 * eye
        # First token: a constant query (a bias) that matches position 0's key best.
        attn.b_Q[2] = 4 * toy_stream(["<bos>"], cfg)[0, FAST]
        attn.W_K[2, FAST] = 4 * eye
        # Same word: query and key both carry the word, so repeats light up.
        attn.W_Q[3, WORD], attn.W_K[3, WORD] = 4 * eye, 4 * eye
    return attn


def induction_attention(cfg: Config = HANDMADE) -> Attention:
    """Layer 1: head 0 is an induction head; the other heads are left at zero.

    Its query carries the current word, its keys the previous word that layer 0 wrote:
    query i matches key j when word j-1 is word i, that is, the token that followed an
    earlier copy of the current one. Its OV circuit copies the word it finds (WORD to
    WORD), so its output, read through the word codes, predicts that token comes next.
    b_Q adds a small match with the key of position 0 (previous word <bos>): a query
    with no earlier copy rests there, as trained heads do.
    """
    attn = Attention(cfg)
    eye = torch.eye(16)
    with torch.no_grad():
        for p in attn.parameters():
            p.zero_()
        attn.W_Q[0, WORD], attn.W_K[0, PREV_WORD] = 8 * eye, 8 * eye
        attn.b_Q[0] = 5 * word_code("<bos>")
        attn.W_V[0, WORD], attn.W_O[0, :, WORD] = eye, eye
    return attn
