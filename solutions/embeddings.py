"""Chapter 1, second half: token ids to vectors (the residual stream's start), and back to logits."""

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from solutions.config import Config


def one_hot(tokens: Int[Tensor, "batch posn"], d_vocab: int) -> Float[Tensor, "batch posn d_vocab"]:
    """Each token id as a float32 row of zeros with a single 1 at the id: the rows of S."""
    return F.one_hot(tokens, d_vocab).float()


class Embed(nn.Module):
    """Token embedding: row t of W_E is the vector token t starts from."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty((cfg.d_vocab, cfg.d_model)))
        nn.init.normal_(self.W_E, std=cfg.init_range)

    def forward(self, tokens: Int[Tensor, "batch posn"]) -> Float[Tensor, "batch posn d_model"]:
        # Indexing is the one-hot product S @ W_E without the zeros. GPT-2 does not scale
        # by sqrt(d_model), unlike the original Transformer.
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    """Learned positional embedding: row i of W_pos is added at position i, whatever the token."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.W_pos = nn.Parameter(torch.empty((cfg.n_ctx, cfg.d_model)))
        nn.init.normal_(self.W_pos, std=cfg.init_range)

    def forward(self, tokens: Int[Tensor, "batch posn"]) -> Float[Tensor, "batch posn d_model"]:
        batch, posn = tokens.shape
        if self.cfg.debug:
            # Without this, W_pos[:posn] would quietly return only n_ctx rows.
            assert posn <= self.cfg.n_ctx, (
                f"{posn} tokens do not fit in the context window: n_ctx = {self.cfg.n_ctx}"
            )
        return einops.repeat(self.W_pos[:posn], "posn d_model -> batch posn d_model", batch=batch)


def sinusoidal_pos_embed(n_ctx: int, d_model: int) -> Float[Tensor, "n_ctx d_model"]:
    """Vaswani et al.'s fixed encodings: PE[pos, 2i] = sin(pos / 10000^(2i/d_model)),
    PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)), for pos = 0..n_ctx-1 (d_model even).
    """
    # float64 angles keep sin and cos accurate at large positions; the table is float32.
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.empty((n_ctx, d_model), dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)  # even columns 2i
    pe[:, 1::2] = torch.cos(pos * freq)  # odd columns 2i + 1, same frequency
    return pe.float()


class Unembed(nn.Module):
    """Reads the residual stream out as logits: one score per vocabulary token."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.W_U = nn.Parameter(torch.empty((cfg.d_model, cfg.d_vocab)))
        nn.init.normal_(self.W_U, std=cfg.init_range)
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))

    def forward(
        self, residual: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_vocab"]:
        # Logits, not probabilities: the loss applies log_softmax itself, more stably.
        logits = einops.einsum(
            residual, self.W_U, "batch posn d_model, d_model d_vocab -> batch posn d_vocab"
        )
        return logits + self.b_U


class TiedUnembed(nn.Module):
    """An Unembed whose W_U is W_E transposed, as in GPT-2: d_vocab * d_model fewer parameters."""

    def __init__(self, cfg: Config, embed: Embed):
        super().__init__()
        self.cfg = cfg
        # A submodule, so a model holding both lists W_E once (parameters() skips repeats)
        # and its gradient sums the contributions of both uses.
        self.embed = embed
        # GPT-2 has no unembedding bias; we keep b_U (zeros) so the interface is Unembed's.
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.embed.W_E.T

    def forward(
        self, residual: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_vocab"]:
        return residual @ self.W_U + self.b_U


def next_token_log_probs(
    logits: Float[Tensor, "batch posn d_vocab"], tokens: Int[Tensor, "batch posn"]
) -> Float[Tensor, "batch posn-1"]:
    """The log-probability that the logits at position i give to the token at position i + 1,
    for every position but the last: minus the cross-entropy loss at each position."""
    # Position i predicts token i + 1, so the last position has nothing to be scored on.
    log_probs = logits[:, :-1].log_softmax(dim=-1)
    targets = tokens[:, 1:]
    # gather picks, at each (batch, position), the entry of the d_vocab axis named by targets.
    return log_probs.gather(dim=-1, index=targets[..., None])[..., 0]
