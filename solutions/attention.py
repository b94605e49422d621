"""Chapter 2: attention, the only layer that moves information between positions.

Each head scores every earlier position's key against the current position's query
(`attention_scores`, `apply_causal_mask`), turns the scores into a pattern with a softmax
over keys, and writes the pattern-weighted sum of values into the stream through W_O.
Local names follow TransformerLens's hooks: q, k, v, attn_scores, pattern, z, attn_out.
"""

import zlib

import einops
import torch
from jaxtyping import Float
from torch import Tensor, nn

from course.config import TINY, Config


def single_head_scores(
    q: Float[Tensor, "query_posn d_head"], k: Float[Tensor, "key_posn d_head"]
) -> Float[Tensor, "query_posn key_posn"]:
    """Every query against every key, q·k / sqrt(d_head): row i holds query i's scores."""
    # A dot product of d_head terms has a spread growing like sqrt(d_head); dividing by it
    # keeps the softmax out of saturation however wide the head is.
    return q @ k.T / q.shape[-1] ** 0.5


def attention_scores(
    q: Float[Tensor, "batch posn n_heads d_head"], k: Float[Tensor, "batch posn n_heads d_head"]
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
    arise: a query always sees its own key. TransformerLens writes -1e5 instead, which
    gives the same pattern as long as real scores stay far above -1e5.
    """
    n = attn_scores.shape[-1]
    future = torch.ones(n, n, dtype=torch.bool, device=attn_scores.device).triu(diagonal=1)
    return attn_scores.masked_fill(future, float("-inf"))


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
        to_heads = "batch posn d_model, n_heads d_model d_head -> batch posn n_heads d_head"
        q = einops.einsum(normalized_resid_pre, self.W_Q, to_heads) + self.b_Q
        k = einops.einsum(normalized_resid_pre, self.W_K, to_heads) + self.b_K
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
        to_heads = "batch posn d_model, n_heads d_model d_head -> batch posn n_heads d_head"
        v = einops.einsum(normalized_resid_pre, self.W_V, to_heads) + self.b_V
        pattern = self.pattern(normalized_resid_pre)
        z = einops.einsum(
            pattern,
            v,
            "batch n_heads query_posn key_posn, batch key_posn n_heads d_head "
            "-> batch query_posn n_heads d_head",
        )
        # Summing over heads here is the same as concatenating the z's and multiplying by
        # one (n_heads·d_head, d_model) matrix: see `concat_heads_then_project`.
        attn_out = einops.einsum(
            z, self.W_O, "batch posn n_heads d_head, n_heads d_head d_model -> batch posn d_model"
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
# weights by hand, to show the pattern shapes trained models are known for and how a
# W_QK produces each one. Only their patterns matter: W_V and W_O are left at zero.

HANDMADE = TINY.but(d_head=16, n_layers=1)
HANDMADE_HEADS = ["previous token", "diagonal band", "first token", "same word"]


def toy_stream(words: list[str], cfg: Config = HANDMADE) -> Float[Tensor, "posn d_model"]:
    """A residual stream for a list of words: the first 32 dimensions say where (sine and
    cosine pairs, fastest first), the last 16 say what (a fixed random unit vector per word)."""
    n_pairs = 16
    freqs = cfg.n_ctx ** (-torch.arange(n_pairs) / n_pairs)
    angles = torch.arange(len(words))[:, None] * freqs
    where = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)
    what = torch.stack([_word_code(w, cfg.d_model - 2 * n_pairs) for w in words])
    return torch.cat([where, what], dim=-1)


def _word_code(word: str, d: int) -> Tensor:
    code = torch.randn(d, generator=torch.Generator().manual_seed(zlib.crc32(word.encode())))
    return code / code.norm()


def handmade_attention(cfg: Config = HANDMADE) -> Attention:
    """An Attention layer whose four heads have the four pattern shapes of HANDMADE_HEADS."""
    attn = Attention(cfg)
    fast, slow, word = slice(0, 16), slice(16, 32), slice(32, 48)
    # Shifting a (sin, cos) pair back by one position is a fixed rotation: x @ back.
    w = cfg.n_ctx ** (-torch.arange(8) / 16)
    back = torch.zeros(16, 16)
    for i, (c, s) in enumerate(zip(w.cos(), w.sin(), strict=True)):
        back[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, s], [-s, c]])
    eye = torch.eye(16)
    with torch.no_grad():
        for p in attn.parameters():
            p.zero_()
        # Previous token: query i carries position i-1, keys carry their own position.
        attn.W_Q[0, fast], attn.W_K[0, fast] = 4 * back, 4 * eye
        # Diagonal band: a query matches its own position, loosely, via slow frequencies.
        attn.W_Q[1, slow], attn.W_K[1, slow] = 3.5 * eye, 3.5 * eye
        # First token: a constant query (a bias) that matches position 0's key best.
        attn.b_Q[2] = 4 * toy_stream(["<bos>"], cfg)[0, fast]
        attn.W_K[2, fast] = 4 * eye
        # Same word: query and key both carry the word, so repeats light up.
        attn.W_Q[3, word], attn.W_K[3, word] = 4 * eye, 4 * eye
    return attn
