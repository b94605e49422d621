"""Chapter 6b: training the transformer on a stream of tokens.

A seeded loader cuts random windows of n_ctx + 1 tokens from one long token tensor; AdamW,
written out, decays only the matrices; the learning rate warms up linearly, then follows a
cosine down; gradients are clipped by their global norm; the validation loss is measured on
fixed windows; and a checkpoint holds everything the loop needs (weights, optimizer, step,
the loader's generator, the log) to resume exactly where it stopped.
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from solutions.attention import attention_flops
from solutions.config import Config
from solutions.scaling import approx_params, training_flops


@dataclass(frozen=True)
class TrainConfig:
    """How to train: batch, schedule, regularisation, evaluation, seed."""

    batch_size: int = 32
    max_steps: int = 2000
    max_lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_windows: int = 64
    # Stop when the validation loss has not improved for this many evaluations in a row,
    # and keep the weights of the best one (0: never stop early).
    patience: int = 3
    seed: int = 0


def random_windows(
    tokens: Int[Tensor, " n"], batch_size: int, n_ctx: int, generator: torch.Generator
) -> Int[Tensor, "batch posn"]:
    """batch_size windows of n_ctx + 1 consecutive tokens, starting at random places.

    A model of context n_ctx reads the first n_ctx tokens and is scored on the last n_ctx:
    position i predicts token i + 1.
    """
    starts = torch.randint(0, len(tokens) - n_ctx, (batch_size,), generator=generator)
    return torch.stack([tokens[s : s + n_ctx + 1] for s in starts.tolist()])


def fixed_windows(
    tokens: Int[Tensor, " n"], n_ctx: int, n_windows: int
) -> Int[Tensor, "batch posn"]:
    """n_windows windows of n_ctx + 1 tokens spread evenly over `tokens`: the same every time."""
    starts = torch.linspace(0, len(tokens) - n_ctx - 1, n_windows).long()
    return torch.stack([tokens[s : s + n_ctx + 1] for s in starts.tolist()])


def window_loss(model: nn.Module, windows: Int[Tensor, "batch posn"]) -> Tensor:
    """Mean next-token loss (nats per token): the model reads the first n_ctx tokens of each
    window, and position i is scored on token i + 1, so every one of the n_ctx counts."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on the weight matrices (TransformerLens's W_*), none on the rest.

    Decay pulls weights toward 0, which suits matrices (it bounds their norm) but not biases
    or LayerNorm's w (whose neutral value is 1). The usual rule "decay what has 2 or more
    axes" would catch b_Q, b_K and b_V here, which are [n_heads, d_head]: the names decide.
    The embeddings W_E and W_pos are matrices and are decayed, as in nanoGPT: a rare token's
    row of W_E gets few gradient updates, and decay keeps it from staying where noise left it.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if name.rsplit(".", 1)[-1].startswith("W_") else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter), as torch.optim.AdamW computes it.

    Each parameter keeps two running averages, of its gradient and of its squared gradient,
    both corrected for starting at 0. The step is about lr in size while the gradient holds
    steady, whatever its scale, and smaller where the gradient is noisy. The decay shrinks the
    weights directly, apart from the gradient, so that it does not pass through Adam's
    rescaling.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:  # no gradient this step: no update, no decay
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                t, m, v = state["step"], state["m"], state["v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.mul_(1 - lr * group["weight_decay"])
                # lr * m_hat / (sqrt(v_hat) + eps), the corrections applied to numbers rather
                # than to whole tensors: fewer passes over memory, the same values.
                sqrt_v_hat = v.sqrt().div_(math.sqrt(1 - beta2**t))
                p.addcdiv_(m, sqrt_v_hat.add_(eps), value=-lr / (1 - beta1**t))


class ForeachAdamW(AdamW):
    """AdamW's update, the same numbers, with each operation applied to all of a group's
    tensors at once by PyTorch's torch._foreach_* functions. On a GPU each is one
    kernel launch for the whole group instead of one per tensor: for a small model, the
    launches, not the arithmetic, are most of an optimizer step (chapter 6b's speed table).
    torch.optim.AdamW does the same on a GPU by default."""

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                self.state[p]["step"] += 1
            grads = [p.grad for p in params]
            m, v = [self.state[p]["m"] for p in params], [self.state[p]["v"] for p in params]
            steps = [self.state[p]["step"] for p in params]
            torch._foreach_mul_(m, beta1)
            torch._foreach_add_(m, grads, alpha=1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            sqrt_v_hat = torch._foreach_sqrt(v)
            torch._foreach_div_(sqrt_v_hat, [math.sqrt(1 - beta2**t) for t in steps])
            torch._foreach_add_(sqrt_v_hat, eps)
            torch._foreach_addcdiv_(params, m, sqrt_v_hat, [-lr / (1 - beta1**t) for t in steps])


def learning_rate(step: int, tcfg: TrainConfig) -> float:
    """Linear warm-up to max_lr over warmup_steps (step 0 already at max_lr / warmup_steps),
    then a cosine down to min_lr at max_steps, and min_lr after."""
    if step < tcfg.warmup_steps:
        return tcfg.max_lr * (step + 1) / tcfg.warmup_steps
    progress = min(1.0, (step - tcfg.warmup_steps) / max(1, tcfg.max_steps - tcfg.warmup_steps))
    return tcfg.min_lr + 0.5 * (tcfg.max_lr - tcfg.min_lr) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def clip_grad_norm(parameters, max_norm: float) -> Tensor:
    """Scale all gradients together, in place, so that their global norm (the norm of every
    gradient entry as one vector) is at most max_norm; return the norm before clipping.

    One factor for all keeps the update's direction; clipping each parameter alone would not.
    The 1e-6 is torch.nn.utils.clip_grad_norm_'s, which this matches.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    # torch._foreach_norm(grads) is [g.norm() for g in grads], and _foreach_mul_ the loop
    # g.mul_(scale), each as one operation over the list: on a GPU, one kernel launch instead
    # of one per tensor.
    total = torch.stack(torch._foreach_norm(grads)).norm()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, scale)
    return total


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Int[Tensor, "batch posn"],
    lr: float,
    grad_clip: float,
) -> float:
    """One optimizer step on one batch at learning rate lr; return the batch's loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = window_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_grad_norm(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate(model: nn.Module, windows: Int[Tensor, "batch posn"], batch_size: int = 16) -> float:
    """Mean loss (nats per token) over the windows, in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size].to(device)
        total += window_loss(model, chunk).item() * len(chunk)
    model.train(was_training)
    return total / len(windows)


def save_checkpoint(path, model, optimizer, generator, step: int, **extra) -> None:
    """Everything a run needs to go on as if it never stopped: the weights, the optimizer's
    state (Adam's m, v and step count per parameter), the loader's generator, the step, and
    whatever else the loop keeps (`extra`: its log, its best weights)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "step": step,
    }
    torch.save(state | extra, path)


def load_checkpoint(path, model, optimizer, generator) -> dict:
    """Put a checkpoint's weights, optimizer state and generator state back in place; return
    the checkpoint (its "step" and extras)."""
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return state


def model_flops_utilisation(cfg: Config, tokens_per_s: float, peak_flops: float) -> float:
    """The fraction of the machine's peak (FLOPs per second) that training at `tokens_per_s`
    spends on the arithmetic the model needs, counted as chapter 6 counts a training step's
    FLOPs (matrix products, attention's included, forward and backward), for windows of
    cfg.n_ctx tokens. What the kernels run beyond that count (a recomputation) is not counted:
    MFU measures the model's needs, not the kernels' work."""
    per_token = (
        training_flops(approx_params(cfg), 1) + 3 * attention_flops(cfg, cfg.n_ctx) / cfg.n_ctx
    )
    return tokens_per_s * per_token / peak_flops


def training_memory(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: Int[Tensor, "batch posn"]
) -> dict[str, int]:
    """Bytes that one training step on `batch` holds, as PyTorch's tensors report them:
    "parameters", "gradients", "optimizer" (its state) and "activations" (what the forward
    pass keeps for backward, beyond the parameters). Takes the step, so that the optimizer's
    state exists."""
    size = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # one entry per block of memory: views share their storage

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = window_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor)]
    return {
        "parameters": size(model.parameters()),
        "gradients": size(p.grad for p in model.parameters() if p.grad is not None),
        "optimizer": size(state),
        "activations": sum(saved.values()),
    }


def pick_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    model: nn.Module,
    train_tokens: Int[Tensor, " n"],
    val_tokens: Int[Tensor, " m"],
    tcfg: TrainConfig,
    checkpoint: Path | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
) -> dict:
    """Train `model` in place; return a summary (steps, tokens seen, time, final losses) and
    its "log": a row per step, {"step", "lr", "train_loss", "val_loss"}, with val_loss None
    where it was not measured. `on_log(row)` is called with each row as it is made (to draw
    a live loss curve, say).

    With `checkpoint`, the state is saved there at every evaluation and after the last step;
    `resume=True` starts from it instead of from scratch. `stop_at` ends the run at that step,
    as an interrupted run would, without changing the schedule. A run that reaches max_steps,
    or stops early (`patience` evaluations without a new lowest validation loss), ends with
    the weights of its lowest validation loss.
    """
    n_ctx = model.cfg.n_ctx
    device = next(model.parameters()).device
    optimizer = AdamW(param_groups(model, tcfg.weight_decay), lr=tcfg.max_lr, betas=tcfg.betas)
    generator = torch.Generator().manual_seed(tcfg.seed)
    val_windows = fixed_windows(val_tokens, n_ctx, tcfg.eval_windows)
    step, log, best = 0, [], {"val_loss": math.inf, "step": 0, "state": None, "bad_evals": 0}
    if resume:
        state = load_checkpoint(checkpoint, model, optimizer, generator)
        step, log, best = state["step"], state["log"], state["best"]
    last = tcfg.max_steps if stop_at is None else min(stop_at, tcfg.max_steps)
    model.train()
    start = time.perf_counter()
    bar = tqdm(total=last, initial=step, disable=not progress, desc=f"training on {device.type}")
    stopped_early = False
    while step < last:
        lr = learning_rate(step, tcfg)
        batch = random_windows(train_tokens, tcfg.batch_size, n_ctx, generator).to(device)
        loss = train_step(model, optimizer, batch, lr, tcfg.grad_clip)
        step += 1
        row = {"step": step, "lr": lr, "train_loss": loss, "val_loss": None}
        if step % tcfg.eval_every == 0 or step == tcfg.max_steps:
            row["val_loss"] = evaluate(model, val_windows)
            if row["val_loss"] < best["val_loss"]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = {"val_loss": row["val_loss"], "step": step, "state": state, "bad_evals": 0}
            else:
                best["bad_evals"] += 1
            bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{row['val_loss']:.3f}")
        log.append(row)
        if on_log is not None:
            on_log(row)
        if checkpoint is not None and row["val_loss"] is not None:
            save_checkpoint(checkpoint, model, optimizer, generator, step, log=log, best=best)
        bar.update(1)
        if tcfg.patience and best["bad_evals"] >= tcfg.patience:
            stopped_early = True
            break
    bar.close()
    seconds = time.perf_counter() - start
    if checkpoint is not None:
        # The state as the loop left it, before the line below: a resumed run goes on from here.
        save_checkpoint(checkpoint, model, optimizer, generator, step, log=log, best=best)
    if (stopped_early or step == tcfg.max_steps) and best["state"] is not None:
        # A finished run keeps the weights of its lowest validation loss: if the loss went up
        # after it, the later weights had begun to memorise.
        model.load_state_dict(best["state"])
    evals = [r for r in log if r["val_loss"] is not None]
    # Training loss measured as the validation loss is (same windows count, eval mode, final
    # weights), so the two are comparable: a gap between them is memorisation.
    train_windows = fixed_windows(train_tokens, n_ctx, tcfg.eval_windows)
    return {
        "steps": step,
        "tokens_seen": step * tcfg.batch_size * n_ctx,
        "time_s": round(seconds, 1),
        "device": device.type,
        "final_train_loss": evaluate(model, train_windows),
        "final_val_loss": best["val_loss"] if evals else None,
        "last_val_loss": evals[-1]["val_loss"] if evals else None,
        "best_step": best["step"],
        "stopped_early": stopped_early,
        "train_config": asdict(tcfg),
        "log": log,
    }
