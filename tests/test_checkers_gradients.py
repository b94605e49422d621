"""Every module checker backpropagates through the learner's module and names each parameter
that no gradient reaches (read through .data, .detach() or under torch.no_grad()): the MLP's
weights and biases, every expert of a mixture, the highway's gate, LayerNorm's w and b, the
attention weights, the embeddings, and the parts of a block and a model. Correct modules,
written other ways, still pass."""

import einops
import pytest
import torch
import torch.nn.functional as F

from checks import attention, embeddings, layernorm, transformer
from checks import mlp as mlp_checks
from solutions import mlp as ref
from solutions.attention import Attention
from solutions.embeddings import Embed, PosEmbed, Unembed
from solutions.layernorm import LayerNorm
from solutions.mlp import MLP, Highway, MixtureOfExperts
from solutions.transformer import Transformer, TransformerBlock
from support import assert_accepts, assert_rejects


def variant(cls, forward):
    return type(cls.__name__, (cls,), {"forward": forward})


def _mlp_w_in_data(self, x):
    return ref.gelu_new(x @ self.W_in.data + self.b_in) @ self.W_out + self.b_out


def _mlp_b_out_detached(self, x):
    return ref.gelu_new(x @ self.W_in + self.b_in) @ self.W_out + self.b_out.detach()


def _mlp_out_no_grad(self, x):
    h = ref.gelu_new(x @ self.W_in + self.b_in)
    with torch.no_grad():
        W_out = self.W_out * 1.0
    return h @ W_out + self.b_out


def _moe_experts_data(self, x):
    """The dense loop with each expert's weights read through .data: only the gate trains."""
    _, R = ref.route(x @ self.W_gate, self.k)
    outs = [ref.gelu_new(x @ e.W_in.data + e.b_in.data) @ e.W_out.data + e.b_out.data
            for e in self.experts]  # fmt: skip
    return (R[..., None] * torch.stack(outs, dim=1)).sum(1)


def _moe_experts_no_grad(self, x):
    _, R = ref.route(x @ self.W_gate, self.k)
    with torch.no_grad():
        outs = torch.stack([e(x[None])[0] for e in self.experts], dim=1)
    return (R[..., None] * outs).sum(1)


def _moe_first_expert_detached(self, x):
    _, R = ref.route(x @ self.W_gate, self.k)
    outs = [e(x[None])[0] for e in self.experts]
    outs[0] = outs[0].detach()
    return (R[..., None] * torch.stack(outs, dim=1)).sum(1)


def _highway_gate_detached(self, x):
    T = torch.sigmoid(x @ self.W_T.detach() + self.b_T)
    return self.transform(x) * T + x * (1 - T)


def _layer_norm_b_data(self, x):
    c = x - x.mean(-1, keepdim=True)
    return (
        c / (c.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w
        + self.b.data
    )


def _attention_v_data(self, x):
    v = einops.einsum(x, self.W_V.data, "b p d, n d h -> b p n h") + self.b_V
    z = einops.einsum(self.pattern(x), v, "b n q k, b k n h -> b q n h")
    return einops.einsum(z, self.W_O, "b q n h, n h d -> b q d") + self.b_O


def _attention_b_o_detached(self, x):
    return Attention.forward(self, x) - self.b_O + self.b_O.detach()


def _attention_pattern_no_grad(self, x):
    with torch.no_grad():
        pattern = self.pattern(x)
    v = einops.einsum(x, self.W_V, "b p d, n d h -> b p n h") + self.b_V
    z = einops.einsum(pattern, v, "b n q k, b k n h -> b q n h")
    return einops.einsum(z, self.W_O, "b q n h, n h d -> b q d") + self.b_O


def _block_ln1_no_grad(self, x):
    with torch.no_grad():
        h = self.ln1(x)
    mid = x + self.attn(h)
    return mid + self.mlp(self.ln2(mid))


def _model_embed_detached(self, tokens):
    residual = self.embed(tokens).detach() + self.pos_embed(tokens)
    for block in self.blocks:
        residual = block(residual)
    return self.unembed(self.ln_final(residual))


CUT = {
    "MLP W_in.data": (mlp_checks.check_mlp, MLP, _mlp_w_in_data, "W_in"),
    "MLP b_out.detach()": (mlp_checks.check_mlp, MLP, _mlp_b_out_detached, "b_out"),
    "MLP W_out under no_grad": (mlp_checks.check_mlp, MLP, _mlp_out_no_grad, "W_out"),
    "MoE experts' .data": (
        mlp_checks.check_mixture_of_experts, MixtureOfExperts, _moe_experts_data, "experts.0.W_in"
    ),
    "MoE experts under no_grad": (
        mlp_checks.check_mixture_of_experts, MixtureOfExperts, _moe_experts_no_grad, "experts."
    ),
    "MoE first expert detached": (
        mlp_checks.check_mixture_of_experts, MixtureOfExperts, _moe_first_expert_detached,
        "experts.0.",
    ),
    "Highway W_T.detach()": (mlp_checks.check_highway, Highway, _highway_gate_detached, "W_T"),
    "LayerNorm b.data": (layernorm.check_layer_norm, LayerNorm, _layer_norm_b_data, "reaches b "),
    "Attention W_V.data": (attention.check_attention, Attention, _attention_v_data, "W_V"),
    "Attention b_O.detach()": (attention.check_attention, Attention, _attention_b_o_detached, "b_O"),
    "Attention pattern under no_grad": (
        attention.check_attention, Attention, _attention_pattern_no_grad, "W_Q"
    ),
    "Embed W_E.data": (
        embeddings.check_embed, Embed, lambda self, tokens: self.W_E.data[tokens], "W_E"
    ),
    "PosEmbed W_pos.detach()": (
        embeddings.check_pos_embed, PosEmbed,
        lambda self, tokens: PosEmbed.forward(self, tokens).detach(), "gradient",
    ),
    "Unembed W_U.data": (
        embeddings.check_unembed, Unembed, lambda self, x: x @ self.W_U.data + self.b_U, "W_U"
    ),
    "TransformerBlock ln1 under no_grad": (
        transformer.check_transformer_block, TransformerBlock, _block_ln1_no_grad, "ln1.w"
    ),
    "Transformer embed detached": (
        transformer.check_transformer, Transformer, _model_embed_detached, "embed.W_E"
    ),
}  # fmt: skip


@pytest.mark.parametrize("mistake", CUT)
def test_module_checkers_name_the_parameter_no_gradient_reaches(mistake):
    checker, cls, forward, name = CUT[mistake]
    message = assert_rejects(checker, variant(cls, forward), "gradient")
    assert name in message, message


def test_the_verdict_says_how_the_gradient_was_cut():
    assert_rejects(
        mlp_checks.check_mlp, variant(MLP, _mlp_w_in_data), "no gradient reaches W_in", ".data"
    )
    assert_rejects(
        mlp_checks.check_mixture_of_experts,
        variant(MixtureOfExperts, _moe_experts_data),
        "self.experts[0].W_in",
    )


def _moe_dense(self, x):
    """Every expert run on every position, weighted by R: zeros where no one chose it."""
    _, R = ref.route(x @ self.W_gate, self.k)
    outs = torch.stack([e(x[None])[0] for e in self.experts], dim=1)
    return einops.einsum(R, outs, "p e, p e d -> p d")


def _mlp_linear(self, x):
    return F.linear(F.gelu(F.linear(x, self.W_in.T, self.b_in), approximate="tanh"),
                    self.W_out.T, self.b_out)  # fmt: skip


ALTERNATIVES = {
    "MLP with F.linear": (mlp_checks.check_mlp, MLP, _mlp_linear),
    "MoE, every expert run densely": (
        mlp_checks.check_mixture_of_experts, MixtureOfExperts, _moe_dense
    ),
    "Attention through the reference's parts": (
        attention.check_attention, Attention, lambda self, x: Attention.forward(self, x)
    ),
    "Embed by one-hot product": (
        embeddings.check_embed, Embed,
        lambda self, t: F.one_hot(t, self.cfg.d_vocab).float() @ self.W_E,
    ),
}  # fmt: skip


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_module_checkers_accept_gradients_that_reach_every_parameter(alternative, capsys):
    checker, cls, forward = ALTERNATIVES[alternative]
    assert_accepts(checker, variant(cls, forward), capsys)
