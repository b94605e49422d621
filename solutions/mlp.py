"""Chapter 3: the MLP, the position-wise layer: each position's stream on its own, through
d_mlp neurons and back.
"""

import math

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from solutions.config import Config


def gelu_new(x: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """GPT-2's GELU: the tanh approximation of the exact GELU, x Φ(x).

    GPT-2 was trained with this form, so its weights expect it; the exact GELU differs from
    it by less than 0.001 everywhere.
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class MLP(nn.Module):
    """GPT-2's MLP: up from d_model to d_mlp neurons, through gelu_new, and back down, at
    every position alike."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        for W in (self.W_in, self.W_out):
            nn.init.normal_(W, std=cfg.init_range)

    def forward(
        self, normalized_resid_mid: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        pre = (
            einops.einsum(
                normalized_resid_mid,
                self.W_in,
                "batch posn d_model, d_model d_mlp -> batch posn d_mlp",
            )
            + self.b_in
        )
        # gelu_new, computed by PyTorch's fused kernel for the same formula: one pass over the
        # activations instead of six.
        post = F.gelu(pre, approximate="tanh")  # the neurons' activations (hook_post)
        mlp_out = einops.einsum(
            post, self.W_out, "batch posn d_mlp, d_mlp d_model -> batch posn d_model"
        )
        return mlp_out + self.b_out


def gelu_new_grad(x: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """φ'(x) for GPT-2's GELU, by the product and chain rules on the tanh formula."""
    c = math.sqrt(2.0 / math.pi)
    t = torch.tanh(c * (x + 0.044715 * x.pow(3)))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t.pow(2)) * c * (1.0 + 3 * 0.044715 * x.pow(2))


def mlp_jacobian(mlp: MLP, x: Float[Tensor, " d_model"]) -> Float[Tensor, "d_model d_model"]:
    """d MLP(x) / dx at one position, rows the output's coordinates (as autograd lays it out).

    Autograd writes the map that a column vector sees: the transpose of the one that acts
    on x as a row, x's own layout here.
    """
    h = x @ mlp.W_in + mlp.b_in
    return (mlp.W_in * gelu_new_grad(h) @ mlp.W_out).T


# --- Mixture of experts ------------------------------------------------------------------
# Softmax over all experts first, then keep the top k. For k >= 2 the k kept weights are
# renormalised to sum to 1 (GShard, Mixtral); they then equal a softmax over the k selected
# logits. For k = 1 the one weight would be exactly 1 whatever the logits, so the router
# would get no gradient from the task: the Switch Transformer keeps the probability itself.
# The full softmax is returned too, because the balance loss needs every expert's
# probability, chosen or not.


def route(
    logits: Float[Tensor, "posn n_experts"], k: int
) -> tuple[Float[Tensor, "posn n_experts"], Float[Tensor, "posn n_experts"]]:
    """(probs, R): the router's softmax over all experts, and the routing matrix R, each row
    zero but for the weights of the k experts the position is sent to.

    For k >= 2 the kept weights sum to 1 in each row; for k = 1 the weight is the chosen
    expert's probability (the Switch Transformer's top-1), so that the router can learn.
    """
    probs = logits.softmax(dim=-1)
    top, chosen = probs.topk(k, dim=-1)
    weights = top / top.sum(-1, keepdim=True) if k > 1 else top
    R = torch.zeros_like(probs).scatter(-1, chosen, weights)
    return probs, R


class MixtureOfExperts(nn.Module):
    """n_experts MLPs and a linear gate; each position goes through its top k experts only."""

    def __init__(self, cfg: Config, n_experts: int, k: int):
        super().__init__()
        self.cfg, self.n_experts, self.k = cfg, n_experts, k
        self.W_gate = nn.Parameter(torch.randn(cfg.d_model, n_experts) * cfg.init_range)
        self.experts = nn.ModuleList(MLP(cfg) for _ in range(n_experts))

    def forward(self, x: Float[Tensor, "posn d_model"]) -> Float[Tensor, "posn d_model"]:
        _, R = route(x @ self.W_gate, self.k)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = R[:, e].nonzero().squeeze(-1)  # the positions routed to expert e
            if len(rows):
                out[rows] += R[rows, e, None] * expert(x[None, rows])[0]
        return out


def load_balance(R: Float[Tensor, "posn n_experts"]) -> Float[Tensor, "n_experts n_experts"]:
    """How the experts share the work: entry (i, j) sums, over the positions, the product of
    the weights a position gives experts i and j.

    Off the diagonal, how much two experts serve the same positions. The diagonal is each
    expert's sum of squared weights, not its load: that is R.sum(0) (weight carried) or
    (R > 0).sum(0) (positions served).
    """
    return R.T @ R


def balance_loss(
    probs: Float[Tensor, "posn n_experts"], R: Float[Tensor, "posn n_experts"]
) -> Float[Tensor, ""]:
    """The Switch Transformer's auxiliary loss: 1 for a router that spreads its choices and
    its probabilities evenly over the experts, more for one that crowds; differentiable in
    every expert's probability, chosen or not."""
    f = (R > 0).float().sum(0) / (R > 0).sum()
    P = probs.mean(0)
    return probs.shape[-1] * (f * P).sum()


def moe_flops_saved(cfg: Config, n_experts: int, k: int) -> int:
    """FLOPs per token a top-k mixture of experts saves against one dense MLP with as many parameters
    (d_mlp · n_experts neurons): 2 FLOPs per multiply-add, weights only, gate included."""
    per_expert = 2 * 2 * cfg.d_model * cfg.d_mlp
    dense = n_experts * per_expert
    moe = k * per_expert + 2 * cfg.d_model * n_experts
    return dense - moe


# --- Highway -------------------------------------------------------------------------------


class Highway(nn.Module):
    """A highway block: a gate T in (0, 1) per coordinate mixes a transform H of x with x
    itself. T = 0 passes x through; T = 1 is the plain transform."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.W_H = nn.Parameter(torch.randn(cfg.d_model, cfg.d_model) * cfg.init_range)
        self.b_H = nn.Parameter(torch.zeros(cfg.d_model))
        self.W_T = nn.Parameter(torch.randn(cfg.d_model, cfg.d_model) * cfg.init_range)
        self.b_T = nn.Parameter(torch.zeros(cfg.d_model))

    def transform(
        self, x: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        return gelu_new(x @ self.W_H + self.b_H)

    def gate(self, x: Float[Tensor, "batch posn d_model"]) -> Float[Tensor, "batch posn d_model"]:
        return torch.sigmoid(x @ self.W_T + self.b_T)

    def forward(
        self, x: Float[Tensor, "batch posn d_model"]
    ) -> Float[Tensor, "batch posn d_model"]:
        T = self.gate(x)
        return self.transform(x) * T + x * (1 - T)
