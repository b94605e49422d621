"""Checkers for chapter 6b's training loop (solutions/training.py).

The optimizer is checked against torch.optim.AdamW step by step, on parameters of two groups
(decayed and not), with the learning rate changed between steps as the schedule does and a
parameter that gets no gradient; clipping against torch.nn.utils.clip_grad_norm_; the
checkpoint functions by resuming a stopped run, which must end where a straight run ends.
Where a result matches a usual mistake (Adam without bias correction, L2 in place of decoupled
decay, eps under the square root, a schedule off by one, clipping each parameter alone, a
resume that forgets the optimizer or the generator), the verdict names it.
"""

import torch._dynamo  # noqa: F401  (torch.optim's first step imports it: seconds, paid here once)

# In the order the chapter teaches them: the order of import is the order `summary` lists.
# isort: off
from checks.training.data import check_random_windows
from checks.training.optimizer import check_adam_w, check_param_groups
from checks.training.schedule import check_clip_grad_norm, check_learning_rate
from checks.training.step import check_evaluate, check_train_step
from checks.training.checkpoint import check_load_checkpoint, check_save_checkpoint
from checks.training.measure import check_model_flops_utilisation, check_training_memory
# isort: on

__all__ = [
    "check_random_windows",
    "check_param_groups",
    "check_adam_w",
    "check_learning_rate",
    "check_clip_grad_norm",
    "check_train_step",
    "check_evaluate",
    "check_save_checkpoint",
    "check_load_checkpoint",
    "check_model_flops_utilisation",
    "check_training_memory",
]
