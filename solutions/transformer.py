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
from solutions.layernorm import LayerNorm
from solutions.mlp import MLP


class FusedAttention(Attention):
    """Attention whose forward uses PyTorch's fused F.scaled_dot_product_attention, with Q, K
    and V from one matrix product.

    The same parameters and the same function as Attention (tested equal, outputs and
    gradients), faster to train, but the pattern is never formed inside forward: for reading
    heads, `pattern` still computes it the explicit way.
    """

    def forward(
        self, normalized_resid_pre: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        batch, posn, _ = normalized_resid_pre.shape
        n_heads, d_head = self.cfg.n_heads, self.cfg.d_head
        # W_Q, W_K and W_V side by side as one [d_model, 3 n_heads d_head] matrix, their biases
        # added inside the product: one matrix product instead of three, and no additions.
        # (Each moved to [d_model, n_heads, d_head] as it is joined: one copy, made by cat.)
        W_QKV = torch.cat([W.transpose(0, 1) for W in (self.W_Q, self.W_K, self.W_V)], dim=1)
        W_QKV = W_QKV.flatten(1)
        b_QKV = torch.cat([self.b_Q, self.b_K, self.b_V]).flatten()
        qkv = torch.addmm(b_QKV, normalized_resid_pre.flatten(0, 1), W_QKV)
        # Split before the heads move forward: the backward pass then joins the three gradients
        # straight into qkv's layout, one operation, not joined heads first and then copied.
        q, k, v = (t.transpose(1, 2) for t in qkv.view(batch, posn, 3, n_heads, d_head).unbind(2))
        # Its default scale is 1 / sqrt(d_head) and is_causal is our causal mask.
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        z = z.transpose(1, 2).reshape(batch * posn, n_heads * d_head)
        attn_out = torch.addmm(self.b_O, z, self.W_O.flatten(0, 1))
        return attn_out.view_as(normalized_resid_pre)


class FusedLayerNorm(LayerNorm):
    """LayerNorm through PyTorch's one fused kernel, F.layer_norm: the same parameters and
    function (tested equal), without the intermediate tensors the explicit form keeps."""

    def forward(
        self, residual: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        return F.layer_norm(residual, (self.cfg.d_model,), self.w, self.b, self.cfg.layer_norm_eps)


class FusedMLP(MLP):
    """MLP with each bias added inside its matrix product (torch.addmm, one kernel over the
    flattened positions): the same parameters and function (tested equal), less memory
    traffic than a product followed by a separate addition."""

    def forward(
        self, normalized_resid_mid: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        x = normalized_resid_mid.flatten(0, 1)
        post = F.gelu(torch.addmm(self.b_in, x, self.W_in), approximate="tanh")
        return torch.addmm(self.b_out, post, self.W_out).view_as(normalized_resid_mid)


class FusedUnembed(Unembed):
    """Unembed with b_U added inside the product (torch.addmm): the same function."""

    def forward(
        self, residual: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_vocab"]:
        logits = torch.addmm(self.b_U, residual.flatten(0, 1), self.W_U)
        return logits.unflatten(0, residual.shape[:2])


class TransformerBlock(nn.Module):
    """Pre-norm: resid_mid = resid_pre + attn(ln1(resid_pre)), resid_post = resid_mid +
    mlp(ln2(resid_mid)). The stream itself is never normalised, only what each layer reads."""

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

    `fused=True` builds it with PyTorch's fused kernels: FusedAttention (one product for Q, K
    and V, and F.scaled_dot_product_attention in place of the explicit softmax),
    FusedLayerNorm, and FusedMLP and FusedUnembed (biases added inside the products). The same
    parameters and function, faster to train (`make bench`, model and speed sections). The
    weights load into either form.
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
        """GPT-2's initialisation: weights normal(0, init_range), biases 0, LayerNorm w 1."""
        for name, p in module.named_parameters(recurse=False):
            with torch.no_grad():
                if isinstance(module, LayerNorm):
                    p.fill_(1.0 if name == "w" else 0.0)
                elif name.startswith("b"):
                    p.zero_()
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
