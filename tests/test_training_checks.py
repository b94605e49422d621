"""The chapter 6b checkers of the data loader, the step, the evaluation and the checkpoints
accept each piece however it is written, and name each usual mistake: windows of n_ctx tokens,
not n_ctx + 1, a step that does not zero or clip the gradients, an evaluation in training mode,
a resume that forgets the optimizer or the generator."""

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
        # batch_size ignored: the same loss, but the whole validation set in one forward pass.
        (lambda model, windows, batch_size=16: ref.evaluate(model, windows, 10**6), "batch by"),
    ],
    ids=["train-mode", "mode-not-restored", "grad", "unweighted", "first-batch", "one-batch"],
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


def test_train_step_names_a_step_that_found_no_gradients():
    def zero_before_step(model, optimizer, batch, lr, grad_clip):
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = ref.window_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.zero_grad()  # clears what backward() just computed
        optimizer.step()
        return loss.item()

    assert_rejects(checks.check_train_step, zero_before_step, "no parameter changed at step 1")


def test_train_step_names_the_parameters_no_gradient_reaches():
    def embeddings_cut(model, optimizer, batch, lr, grad_clip):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        inputs = batch[:, :-1]
        residual = (model.embed(inputs) + model.pos_embed(inputs)).detach()
        for block in model.blocks:
            residual = block(residual)
        logits = model.unembed(model.ln_final(residual))
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return loss.item()

    assert_rejects(
        checks.check_train_step, embeddings_cut, "embed.W_E, pos_embed.W_pos", "did not change"
    )
