"""The fused fast path of chapter 5's model: Attention, LayerNorm, MLP and Unembed with the
same parameters and the same function, each forward written with PyTorch's fused kernels.
`Transformer(cfg, fused=True)` builds its blocks from these; the weights load into either form.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from solutions.attention import Attention
from solutions.embeddings import Unembed
from solutions.layernorm import LayerNorm
from solutions.mlp import MLP


class FusedAttention(Attention):
    """Attention whose forward uses PyTorch's fused F.scaled_dot_product_attention, with Q, K
    and V from one matrix product.

    The same parameters and the same function as Attention, outputs and gradients, but the
    pattern is never formed inside forward: for reading heads, `pattern` still computes it the
    explicit way.
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
    function, without the intermediate tensors the explicit form keeps."""

    def forward(
        self, residual: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        return F.layer_norm(residual, (self.cfg.d_model,), self.w, self.b, self.cfg.layer_norm_eps)


class FusedMLP(MLP):
    """MLP with each bias added inside its matrix product (torch.addmm, one kernel over the
    flattened positions): the same parameters and function, with less memory traffic than a
    product followed by a separate addition."""

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
