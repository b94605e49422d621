"""Checkers for chapter 3 (solutions/mlp.py).

Every check uses random weights, biases included, on TINY and on MLP_NOT_4X (d_mlp ≠
4 · d_model; "ODD" in the cases' names), with pre-activations of order 1 to 3, where GPT-2's
tanh GELU and the exact GELU differ by 1e-4 and more: the tolerances are tighter than that,
so the exact GELU fails.
"""

# Chapter 3b's neuron checkers use this one too.
from checks.mlp._common import call_keeping_weights as call_keeping_weights

# In the order the chapter teaches them: the order of import is the order `summary` lists.
# isort: off
from checks.mlp.dense import check_gelu_new, check_mlp, check_gelu_new_grad, check_mlp_jacobian
from checks.mlp.experts import (
    check_route,
    check_mixture_of_experts,
    check_load_balance,
    check_balance_loss,
    check_moe_flops_saved,
)
from checks.mlp.highway import check_highway
# isort: on

__all__ = [
    "check_gelu_new",
    "check_mlp",
    "check_gelu_new_grad",
    "check_mlp_jacobian",
    "check_route",
    "check_mixture_of_experts",
    "check_load_balance",
    "check_balance_loss",
    "check_moe_flops_saved",
    "check_highway",
]
