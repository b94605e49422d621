"""Chapter 5: the whole GPT-2: embeddings, a stack of pre-norm blocks, a final LayerNorm, and
the unembedding. Every layer reads the residual stream and adds its output back into it.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from solutions.attention import Attention
from solutions.config import Config
from solutions.embeddings import Embed, PosEmbed, Unembed
from solutions.fused import FusedAttention, FusedLayerNorm, FusedMLP, FusedUnembed
from solutions.layernorm import LayerNorm
from solutions.mlp import MLP


class TransformerBlock(nn.Module):
    """GPT-2's pre-norm block: attention, then the MLP, each reading the stream through its
    own LayerNorm and adding its output to it. The stream itself is never normalised, only
    what each layer reads."""

    def __init__(self, cfg: Config, fused: bool = False):
        super().__init__()
        self.cfg = cfg
        norm = FusedLayerNorm if fused else LayerNorm
        self.ln1 = norm(cfg)
        self.attn = FusedAttention(cfg) if fused else Attention(cfg)
        self.ln2 = norm(cfg)
        self.mlp = FusedMLP(cfg) if fused else MLP(cfg)

    def forward(
        self, resid_pre: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        resid_mid = resid_pre + self.attn(self.ln1(resid_pre))
        resid_post = resid_mid + self.mlp(self.ln2(resid_mid))
        return resid_post


class Transformer(nn.Module):
    """Token ids in, next-token logits out, at every position.

    `fused=True` builds it from solutions/fused.py, PyTorch's fused kernels: FusedAttention
    (one product for Q, K and V, and F.scaled_dot_product_attention in place of the explicit
    softmax), FusedLayerNorm, and FusedMLP and FusedUnembed (biases added inside the
    products). The same parameters and function, for training. The weights load into either
    form.
    """

    def __init__(self, cfg: Config, fused: bool = False):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.blocks = nn.ModuleList([TransformerBlock(cfg, fused) for _ in range(cfg.n_layers)])
        self.ln_final = FusedLayerNorm(cfg) if fused else LayerNorm(cfg)
        self.unembed = FusedUnembed(cfg) if fused else Unembed(cfg)
        self.apply(self._init_gpt2)

    def _init_gpt2(self, module: nn.Module) -> None:
        """GPT-2's initialisation (its paper's section 2.3): weights normal(0, init_range), but
        the two matrices that write into the residual stream, W_O and W_out, with a standard
        deviation √(2·n_layers) times smaller; biases 0, LayerNorm w 1."""
        # Each block adds two writes to the stream, each of about the same size whatever the
        # depth (it reads a normalised stream); scaled so, all 2·n_layers of them together add
        # as much variance as one unscaled write, and a deeper model starts no louder.
        residual_std = self.cfg.init_range / (2 * self.cfg.n_layers) ** 0.5
        for name, p in module.named_parameters(recurse=False):
            with torch.no_grad():
                if isinstance(module, LayerNorm):
                    p.fill_(1.0 if name == "w" else 0.0)
                elif name.startswith("b"):
                    p.zero_()
                elif name in ("W_O", "W_out"):
                    p.normal_(0.0, residual_std)
                else:
                    p.normal_(0.0, self.cfg.init_range)

    def forward(self, tokens: Int[Tensor, "batch posn"]) -> Float[Tensor, "batch posn d_vocab"]:
        residual = self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


def lm_loss(
    logits: Float[Tensor, "batch posn d_vocab"], tokens: Int[Tensor, "batch posn"]
) -> Float[Tensor, ""]:
    """Mean cross-entropy (nats per token) of predicting token i + 1 from position i."""
    # F.cross_entropy is -log_softmax picked at the target (embeddings.next_token_log_probs),
    # in one fused, stable step.
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
