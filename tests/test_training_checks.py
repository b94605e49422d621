"""The chapter 6b checkers accept the training loop however it is written, and name each usual
mistake: Adam without bias correction, L2 for decoupled decay, eps under the square root, decay
on the wrong parameters, a schedule off by one, clipping per parameter, a resume that forgets
the optimizer or the generator."""

import math

import pytest
import torch
import torch.nn.functional as F

from checks import training as checks
from solutions import training as ref
from support import assert_accepts, assert_rejects

# --- The data loader -----------------------------------------------------------------------


def test_random_windows_accepts_the_reference_and_unfold(capsys):
    assert_accepts(checks.check_random_windows, ref.random_windows, capsys)

    def by_unfold(tokens, batch_size, n_ctx, generator):
        starts = torch.randint(len(tokens) - n_ctx, (batch_size,), generator=generator)
        return tokens.unfold(0, n_ctx + 1, 1)[starts]

    assert_accepts(checks.check_random_windows, by_unfold, capsys)


def windows(*, length=1, high=0, rng="generator", consecutive=True):
    def random_windows(tokens, batch_size, n_ctx, generator):
        g = generator if rng == "generator" else None
        starts = torch.randint(0, len(tokens) - n_ctx - high, (batch_size,), generator=g)
        if not consecutive:
            return tokens[torch.randint(len(tokens), (batch_size, n_ctx + 1), generator=g)]
        return torch.stack([tokens[s : s + n_ctx + length] for s in starts.tolist()])

    return random_windows


@pytest.mark.parametrize(
    "learner, message",
    [
        (windows(length=0), "it takes n_ctx + 1"),
        (windows(high=1), "draw below len(tokens) - n_ctx"),
        (windows(rng="global"), "generator=generator"),
        (windows(consecutive=False), "consecutive tokens"),
    ],
    ids=["n_ctx", "high-off-by-one", "global-rng", "not-consecutive"],
)
def test_random_windows_rejects_and_names(learner, message):
    assert_rejects(checks.check_random_windows, learner, message)


# --- Which parameters decay ----------------------------------------------------------------


def test_param_groups_accepts_the_reference_and_other_groupings(capsys):
    assert_accepts(checks.check_param_groups, ref.param_groups, capsys)

    def three_groups_in_another_order(model, weight_decay):
        named = dict(model.named_parameters())
        embeddings = [p for n, p in named.items() if n.endswith(("W_E", "W_pos"))]
        matrices = [p for n, p in named.items() if ".W_" in n and not n.endswith(("W_E", "W_pos"))]
        rest = [p for n, p in named.items() if "W_" not in n]
        return [
            {"params": rest, "weight_decay": 0.0},
            {"params": matrices, "weight_decay": weight_decay},
            {"params": embeddings, "weight_decay": weight_decay},
        ]

    assert_accepts(checks.check_param_groups, three_groups_in_another_order, capsys)


def groups(decays, keep=lambda n, p: True):
    def param_groups(model, weight_decay):
        named = [(n, p) for n, p in model.named_parameters() if keep(n, p)]
        return [
            {"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
        ]

    return param_groups


def last(name):
    return name.rsplit(".", 1)[-1]


@pytest.mark.parametrize(
    "learner, message",
    [
        (groups(lambda n, p: p.ndim >= 2), "2 or more axes"),
        (groups(lambda n, p: True), "decayed every parameter"),
        (groups(lambda n, p: last(n).startswith(("W_", "b_"))), "biases"),
        (groups(lambda n, p: last(n).startswith("W_") or last(n) == "w"), "LayerNorm's w"),
        (
            groups(lambda n, p: ".W_" in n and not n.endswith(("E", "pos"))),
            "embeddings W_E and W_pos",
        ),
        (groups(lambda n, p: "W_" in n, keep=lambda n, p: "ln" not in n), "in no group"),
    ],
    ids=["ndim", "everything", "biases", "layernorm", "no-embeddings", "left-out"],
)
def test_param_groups_rejects_and_names(learner, message):
    assert_rejects(checks.check_param_groups, learner, message)


def test_param_groups_wants_each_group_s_weight_decay():
    def no_key(model, weight_decay):
        return [{"params": list(model.parameters())}]

    assert_rejects(checks.check_param_groups, no_key, "has no 'weight_decay'")


# --- AdamW -------------------------------------------------------------------------------------


def adam(
    *,
    bias_correction=True,
    l2=False,
    eps_inside=False,
    decay_lr=True,
    group_decay=True,
    group_lr=True,
    swap=False,
    state_outside=False,
    skip_none=True,
):
    """An AdamW written the way a learner might, one mistake switched on."""

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr = group["lr"] if group_lr else self.defaults["lr"]
            beta1, beta2 = group["betas"][::-1] if swap else group["betas"]
            wd = group["weight_decay"] if group_decay else self.defaults["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    if skip_none:
                        continue
                    p.mul_(1 - lr * wd)
                    continue
                if state_outside:
                    store = self.__dict__.setdefault("mine", {})
                    state = store.setdefault(p, {})
                else:
                    state = self.state[p]
                if "t" not in state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                g = p.grad + wd * p if l2 else p.grad
                state["m"].lerp_(g, 1 - beta1)
                state["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m, v = state["m"], state["v"]
                if bias_correction:
                    m = m / (1 - beta1 ** state["t"])
                    v = v / (1 - beta2 ** state["t"])
                denom = (v + group["eps"]).sqrt() if eps_inside else v.sqrt() + group["eps"]
                if not l2:
                    p.mul_(1 - (lr if decay_lr else 1) * wd)
                p.addcdiv_(m, denom, value=-lr)

    return type("AdamW", (ref.AdamW,), {"step": step})


def test_adam_w_accepts_the_reference_and_another_writing(capsys):
    assert_accepts(checks.check_adam_w, ref.AdamW, capsys)
    assert_accepts(checks.check_adam_w, adam(), capsys)


def test_adam_w_accepts_plain_tensor_arithmetic_and_a_tensor_step_count(capsys):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is not None:
                    s = self.state[p]
                    s["n"] = s.get("n", torch.tensor(0.0)) + 1
                    s["m"] = b1 * s.get("m", 0) + (1 - b1) * p.grad
                    s["v"] = b2 * s.get("v", 0) + (1 - b2) * p.grad**2
                    m_hat, v_hat = s["m"] / (1 - b1 ** s["n"]), s["v"] / (1 - b2 ** s["n"])
                    update = m_hat / (torch.sqrt(v_hat) + group["eps"])
                    p -= group["lr"] * group["weight_decay"] * p
                    p -= group["lr"] * update

    assert_accepts(checks.check_adam_w, type("AdamW", (ref.AdamW,), {"step": step}), capsys)


ADAM_MISTAKES = {
    "no bias correction": (dict(bias_correction=False), "left out the bias correction"),
    "L2 instead of decoupled": (dict(l2=True), "added the weight decay to the gradient"),
    "eps under the square root": (dict(eps_inside=True), "put eps under the square root"),
    "decay without lr": (dict(decay_lr=False), "without the learning rate"),
    "decay in every group": (dict(group_decay=False), "decayed every group"),
    "lr from the defaults": (dict(group_lr=False), "read group['lr'] at every step"),
    "betas swapped": (dict(swap=True), "swapped beta1 and beta2"),
    "state outside self.state": (dict(state_outside=True), "self.state[p]"),
    "decays parameters without a gradient": (dict(skip_none=False), "p.grad is None"),
}


@pytest.mark.parametrize("mistake", ADAM_MISTAKES)
def test_adam_w_rejects_and_names(mistake):
    switches, message = ADAM_MISTAKES[mistake]
    assert_rejects(checks.check_adam_w, adam(**switches), message)


def test_adam_w_rejects_a_step_that_crashes_on_a_missing_gradient():
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.sub_(group["lr"] * p.grad.sign())

    learner = type("AdamW", (ref.AdamW,), {"step": step})
    assert_rejects(checks.check_adam_w, learner, "raised AttributeError", "p.grad.sign()")


def test_adam_w_rejects_the_stub():
    def stub(self):
        raise NotImplementedError()

    learner = type("AdamW", (ref.AdamW,), {"step": stub})
    assert_rejects(checks.check_adam_w, learner, "not implemented yet")


# --- The schedule ----------------------------------------------------------------------------


def schedule(*, warm=1, warmup=True, floor=True, start_after_warmup=True, clamp=True):
    def learning_rate(step, tcfg):
        if warmup and step < tcfg.warmup_steps:
            return tcfg.max_lr * (step + warm) / tcfg.warmup_steps
        start = tcfg.warmup_steps if start_after_warmup else 0
        progress = (step - start) / (tcfg.max_steps - start)
        progress = min(progress, 1) if clamp else progress
        low = tcfg.min_lr if floor else 0.0
        return low + (tcfg.max_lr - low) * (math.cos(math.pi * progress) + 1) / 2

    return learning_rate


def test_learning_rate_accepts_the_reference_and_a_tensor_writing(capsys):
    assert_accepts(checks.check_learning_rate, ref.learning_rate, capsys)
    assert_accepts(checks.check_learning_rate, schedule(), capsys)

    def with_tensors(step, tcfg):
        warm = torch.tensor(tcfg.max_lr * (step + 1) / tcfg.warmup_steps)
        t = torch.tensor((step - tcfg.warmup_steps) / (tcfg.max_steps - tcfg.warmup_steps))
        cosine = tcfg.min_lr + (tcfg.max_lr - tcfg.min_lr) * 0.5 * (1 + torch.cos(torch.pi * t))
        late = torch.tensor(tcfg.min_lr, dtype=torch.float64)
        warming = torch.tensor(step < tcfg.warmup_steps)
        return torch.where(t > 1, late, torch.where(warming, warm, cosine))

    assert_accepts(checks.check_learning_rate, with_tensors, capsys)


@pytest.mark.parametrize(
    "learner, message",
    [
        (schedule(warm=0), "warmed up off by one"),
        (schedule(warmup=False, start_after_warmup=False), "left out the warm-up"),
        (schedule(floor=False), "fall to 0"),
        (schedule(start_after_warmup=False), "over all of max_steps"),
        (schedule(clamp=False), "past max_steps"),
        (lambda step, tcfg: None, "should be a number"),
    ],
    ids=["off-by-one", "no-warmup", "to-zero", "whole-cosine", "unclamped", "none"],
)
def test_learning_rate_rejects_and_names(learner, message):
    assert_rejects(checks.check_learning_rate, learner, message)


def test_learning_rate_rejects_a_linear_decay():
    def linear(step, tcfg):
        if step < tcfg.warmup_steps:
            return tcfg.max_lr * (step + 1) / tcfg.warmup_steps
        progress = min(1, (step - tcfg.warmup_steps) / (tcfg.max_steps - tcfg.warmup_steps))
        return tcfg.max_lr - (tcfg.max_lr - tcfg.min_lr) * progress

    assert_rejects(checks.check_learning_rate, linear, "decayed linearly")


# --- Clipping ----------------------------------------------------------------------------------


def test_clip_grad_norm_accepts_the_reference_and_torch_s(capsys):
    assert_accepts(checks.check_clip_grad_norm, ref.clip_grad_norm, capsys)

    def torch_s(parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)

    assert_accepts(checks.check_clip_grad_norm, torch_s, capsys)

    def sum_of_squares(parameters, max_norm):
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = math.sqrt(sum((g**2).sum().item() for g in grads))
        if norm > max_norm:
            for g in grads:
                g *= max_norm / (norm + 1e-6)
        return norm

    assert_accepts(checks.check_clip_grad_norm, sum_of_squares, capsys)


def clip(*, per_param=False, always=False, total="global", twice=False, after=False):
    @torch.no_grad()
    def clip_grad_norm(parameters, max_norm):
        params = parameters if twice else list(parameters)
        norms = [p.grad.norm() for p in params if p.grad is not None]
        norm = {"global": torch.stack(norms).norm(), "sum": sum(norms)}[total]
        for p in params:
            if p.grad is None:
                continue
            own = p.grad.norm() if per_param else norm
            factor = max_norm / (own + 1e-6)
            p.grad.mul_(factor if always else factor.clamp(max=1))
        return norm.clamp(max=max_norm) if after else norm

    return clip_grad_norm


@pytest.mark.parametrize(
    "learner, message",
    [
        (clip(per_param=True), "clipped each parameter's gradient by its own norm"),
        (clip(always=True), "even when their norm was below it"),
        (clip(total="sum"), "added up the parameters' norms"),
        (clip(twice=True), "model.parameters() is a generator"),
        (clip(after=True), "returned the norm after clipping"),
    ],
    ids=["per-parameter", "always", "sum-of-norms", "generator-twice", "norm-after"],
)
def test_clip_grad_norm_rejects_and_names(learner, message):
    assert_rejects(checks.check_clip_grad_norm, learner, message)


# --- One step ----------------------------------------------------------------------------------


def step(*, zero=True, clip=True, groups=None, item=True, loss_after=False):
    def train_step(model, optimizer, batch, lr, grad_clip):
        for group in optimizer.param_groups[:groups]:
            group["lr"] = lr
        if zero:
            optimizer.zero_grad()
        loss = ref.window_loss(model, batch)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if loss_after:
            loss = ref.window_loss(model, batch)
        return loss.item() if item else loss

    return train_step


def test_train_step_accepts_the_reference_and_zero_grad_at_the_end(capsys):
    assert_accepts(checks.check_train_step, ref.train_step, capsys)

    def zero_at_the_end(model, optimizer, batch, lr, grad_clip):
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    assert_accepts(checks.check_train_step, zero_at_the_end, capsys)


@pytest.mark.parametrize(
    "learner, message",
    [
        (step(zero=False), "did not zero the gradients"),
        (step(clip=False), "did not clip the gradients"),
        (step(groups=1), "of the first group only"),
        (step(groups=0), "did not set the learning rate"),
        (step(item=False), "loss.item()"),
        (step(loss_after=True), "loss at step 1"),
    ],
    ids=["no-zero-grad", "no-clip", "first-group", "no-lr", "tensor", "loss-after"],
)
def test_train_step_rejects_and_names(learner, message):
    assert_rejects(checks.check_train_step, learner, message)


# --- Evaluation --------------------------------------------------------------------------------


def evaluation(*, eval_mode=True, restore=True, no_grad=True, weighted=True, first_only=False):
    def evaluate(model, windows, batch_size=16):
        was = model.training
        if eval_mode:
            model.eval()
        with torch.set_grad_enabled(not no_grad):
            losses, sizes = [], []
            for i in range(0, len(windows), batch_size):
                chunk = windows[i : i + batch_size]
                losses.append(ref.window_loss(model, chunk).item())
                sizes.append(len(chunk))
                if first_only:
                    break
        if restore:
            model.train(was)
        if weighted:
            return sum(x * n for x, n in zip(losses, sizes, strict=True)) / sum(sizes)
        return sum(losses) / len(losses)

    return evaluate


def test_evaluate_accepts_the_reference_and_summed_losses(capsys):
    assert_accepts(checks.check_evaluate, ref.evaluate, capsys)
    assert_accepts(checks.check_evaluate, evaluation(), capsys)

    @torch.no_grad()
    def summed(model, windows, batch_size=16):
        mode = model.training
        model.eval()
        total = sum(
            F.cross_entropy(
                model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten(), reduction="sum"
            ).item()
            for w in windows.split(batch_size)
        )
        model.train(mode)
        return total / windows[:, 1:].numel()

    assert_accepts(checks.check_evaluate, summed, capsys)


@pytest.mark.parametrize(
    "learner, message",
    [
        (evaluation(eval_mode=False), "evaluated in training mode"),
        (evaluation(restore=False), "came back in the other"),
        (evaluation(no_grad=False), "torch.no_grad()"),
        (evaluation(weighted=False), "weight each by its number of windows"),
        (evaluation(first_only=True), "only the first batch"),
    ],
    ids=["train-mode", "mode-not-restored", "grad", "unweighted", "first-batch"],
)
def test_evaluate_rejects_and_names(learner, message):
    assert_rejects(checks.check_evaluate, learner, message)


# --- Checkpoints -------------------------------------------------------------------------------


def saver(*, optimizer=True, generator="state", extra=True, step_offset=0):
    def save_checkpoint(path, model, optim, gen, step, **more):
        state = {"model": model.state_dict(), "step": step + step_offset}
        if optimizer:
            state["optimizer"] = optim.state_dict()
        state["generator"] = {
            "state": gen.get_state(),
            "seed": torch.Generator().manual_seed(gen.initial_seed()).get_state(),
        }[generator]
        torch.save(state | (more if extra else {}), path)

    return save_checkpoint


def loader(*, optimizer=True, generator=True, model=True):
    def load_checkpoint(path, net, optim, gen):
        state = torch.load(path, weights_only=False)
        if model:
            net.load_state_dict(state["model"])
        if optimizer:
            optim.load_state_dict(state["optimizer"])
        if generator:
            gen.set_state(state["generator"])
        return state

    return load_checkpoint


def test_checkpoint_checks_accept_the_reference_and_other_writings(capsys):
    assert_accepts(checks.check_save_checkpoint, ref.save_checkpoint, capsys)
    assert_accepts(checks.check_load_checkpoint, ref.load_checkpoint, capsys)
    assert_accepts(checks.check_save_checkpoint, saver(), capsys)
    assert_accepts(checks.check_load_checkpoint, loader(), capsys)


@pytest.mark.parametrize(
    "learner, message",
    [
        (saver(optimizer=False), "'optimizer'"),
        (saver(generator="seed"), "generator's state was not saved"),
        (saver(extra=False), "extra keyword arguments"),
        (saver(step_offset=1), "the run stopped after step 3"),
    ],
    ids=["no-optimizer", "seed-not-state", "no-extras", "step"],
)
def test_save_checkpoint_rejects_and_names(learner, message):
    assert_rejects(checks.check_save_checkpoint, learner, message)


@pytest.mark.parametrize(
    "learner, message",
    [
        (loader(optimizer=False), "optimizer's state was not restored"),
        (loader(generator=False), "generator's state was not restored"),
        (loader(model=False), "weights were not restored"),
        (lambda path, *objects: None, "return the checkpoint"),
    ],
    ids=["no-optimizer", "no-generator", "no-weights", "none"],
)
def test_load_checkpoint_rejects_and_names(learner, message):
    assert_rejects(checks.check_load_checkpoint, learner, message)
