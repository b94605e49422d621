"""What the course's small trained models share: a training recipe (SMALL_TRAINING), seeded
one-thread training with chapter 6b's loop, weights shipped in float16, and compact json logs.
Used by course/models/train_circuits.py (chapter 5b), train_text_model.py (chapter 7) and
train_scaling_law.py (chapter 6)."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from solutions.training import TrainConfig, train

# What the small shipped models' training shares: a short warm-up, and no early stopping, so
# that each run follows its whole schedule. The rest is chapter 6b's TrainConfig; each model
# changes what it needs with dataclasses.replace.
SMALL_TRAINING = TrainConfig(warmup_steps=50, patience=0)


def setup(seed: int) -> None:
    """The same reductions, in the same order, at every run on a given CPU: one thread (these
    models are too small to gain from more, and threads that wait on a busy machine stall)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def round_to_float16(model: nn.Module) -> nn.Module:
    """The weights as they are shipped: float16 values, computed with in float32."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model.eval()


def train_logged(
    model: nn.Module,
    train_tokens: torch.Tensor,
    val_tokens: torch.Tensor,
    tcfg: TrainConfig,
    progress: bool = True,
    stop_at: int | None = None,
) -> list[dict]:
    """solutions.training.train on `model` (in place); its loss log, one dict per step, with
    val_loss only where it was measured. `stop_at` ends the run at that step, on the full
    run's schedule."""
    summary = train(model, train_tokens, val_tokens, tcfg, stop_at=stop_at, progress=progress)
    return [{k: v for k, v in row.items() if v is not None} for row in summary["log"]]


def save_weights(model: nn.Module, path: Path) -> None:
    """The state dict in float16, as safetensors."""
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """`model` with the weights of `path`, in float32 and eval mode."""
    model.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return model.eval()


def write_json(value, path: Path) -> None:
    """Compact json, floats to 6 significant digits (the tests compare to 1e-4)."""

    def rounded(v):
        if isinstance(v, float):
            return float(f"{v:.6g}")
        if isinstance(v, dict):
            return {k: rounded(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [rounded(x) for x in v]
        return v

    path.write_text(json.dumps(rounded(value), separators=(",", ":")) + "\n", encoding="utf-8")
