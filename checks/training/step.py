"""The checkers of chapter 6b's training step and of its evaluation on held-out windows."""

import torch

from checks._core import exercise, seeded
from checks.training._common import SMALL, _as_float, _model, _number
from solutions import training as ref
from solutions.transformer import Transformer

# --- One step ----------------------------------------------------------------------------------


def _optimizer(model, lr=0.1):
    return ref.AdamW(ref.param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))


def _step_variant(model, optimizer, batch, lr, grad_clip, *, zero=True, clip=True, groups=None):
    for group in optimizer.param_groups[:groups]:
        group["lr"] = lr
    loss = ref.window_loss(model, batch)
    if zero:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        ref.clip_grad_norm(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


STEP_MISTAKES = {
    "did not zero the gradients: backward() adds to p.grad, so without "
    "optimizer.zero_grad() each step also takes the gradients of the steps before": dict(
        zero=False
    ),
    "did not clip the gradients, between backward() and optimizer.step()": dict(clip=False),
    "set the learning rate of the first group only: set group['lr'] in every group of "
    "optimizer.param_groups": dict(groups=1),
    "did not set the learning rate: set group['lr'] = lr in every group of "
    "optimizer.param_groups before the step": dict(groups=0),
}


def _values(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _check_trained(check, start, theirs, expected, t: int) -> None:
    """Name the parameters the step left as they were, where the reference's moved."""
    still = [n for n in start if torch.equal(theirs[n], start[n])]
    still = [n for n in still if not torch.equal(expected[n], start[n])]
    if not still:
        return
    if len(still) == len(start):
        check.fail(
            f"no parameter changed at step {t + 1}: optimizer.step() found no gradients. "
            "Zero them before loss.backward(), not between it and optimizer.step(), and "
            "backpropagate the loss itself (no torch.no_grad(), .detach() or .item() on the way)."
        )
    check.fail(
        f"{', '.join(still[:4])}{' ...' if len(still) > 4 else ''} did not change at step "
        f"{t + 1}, where the reference's did: no gradient reached them. Compute the loss from "
        "the model's whole forward pass, with every parameter in the graph."
    )


@exercise(ref.train_step)
def check_train_step(check, train_step):
    for i, (lrs, grad_clip) in enumerate([((3e-3, 1e-2, 2e-3), 0.5), ((1e-3, 2e-3), 100.0)]):
        with check.case(f"{len(lrs)} steps at lr {lrs}, grad_clip {grad_clip:g}"):
            gen = seeded(50 + i)
            batches = [
                torch.randint(SMALL.d_vocab, (3, SMALL.n_ctx + 1), generator=gen) for _ in lrs
            ]
            theirs = _model(60 + i)
            expected = _model(60 + i)
            variants = {m: _model(60 + i) for m in STEP_MISTAKES}
            optimizers = {
                "theirs": _optimizer(theirs),
                "expected": _optimizer(expected),
                **{m: _optimizer(v) for m, v in variants.items()},
            }
            for t, (batch, lr) in enumerate(zip(batches, lrs, strict=True)):
                start = _values(theirs)
                got = check.call(train_step, theirs, optimizers["theirs"], batch, lr, grad_clip)
                loss = ref.train_step(expected, optimizers["expected"], batch, lr, grad_clip)
                _check_trained(check, start, _values(theirs), _values(expected), t)
                for m, flags in STEP_MISTAKES.items():
                    _step_variant(variants[m], optimizers[m], batch, lr, grad_clip, **flags)
                if isinstance(got, torch.Tensor):
                    check.fail(
                        "return loss.item(), a Python float: a tensor keeps its whole "
                        "graph alive in the log."
                    )
                _number(check, _as_float(check, got, "loss"), loss, f"loss at step {t + 1}", {})
                flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
                check.tensor(
                    flat(theirs),
                    flat(expected),
                    what=f"parameters after step {t + 1}",
                    mistakes={m: flat(v) for m, v in variants.items()},
                    rtol=1e-5,
                    atol=1e-7,
                )


# --- Evaluation --------------------------------------------------------------------------------


class _ModeShows(Transformer):
    """A model whose output depends on its mode, as one with dropout would: evaluating it in
    training mode gives another loss."""

    def forward(self, tokens):
        logits = super().forward(tokens)
        return logits * 1.5 if self.training else logits


@exercise(ref.evaluate)
def check_evaluate(check, evaluate):
    for i, (n_windows, batch_size, training) in enumerate(
        [(10, 4, True), (3, 16, True), (8, 8, False)]
    ):
        with check.case(
            f"{n_windows} windows in batches of {batch_size}, model in "
            f"{'training' if training else 'eval'} mode"
        ):
            torch.manual_seed(70 + i)
            model = _ModeShows(SMALL).train(training)
            gen = seeded(80 + i)
            windows = torch.randint(SMALL.d_vocab, (n_windows, SMALL.n_ctx + 1), generator=gen)
            grad_modes, sizes = [], []

            def record(module, args, output, modes=grad_modes, sizes=sizes):
                modes.append(torch.is_grad_enabled())
                sizes.append(len(args[0]) if args and isinstance(args[0], torch.Tensor) else 0)

            hook = model.register_forward_hook(record)
            try:
                got = check.call(evaluate, model, windows, batch_size)
            finally:
                hook.remove()
            if model.training != training:
                mode = "training" if training else "eval"
                check.fail(
                    f"the model was in {mode} mode and came back in the other: put back "
                    "the mode it had (model.train(was_training)), as training goes on "
                    "after an evaluation."
                )
            if isinstance(got, torch.Tensor) and got.requires_grad or any(grad_modes):
                check.fail(
                    "the model ran with gradients on: evaluate under torch.no_grad() "
                    "(@torch.no_grad() above the def), which builds no graph."
                )
            if sizes and max(sizes) > batch_size:
                check.fail(
                    f"the model read {max(sizes)} windows at once, with batch_size "
                    f"{batch_size}: evaluate batch by batch, windows[i : i + batch_size], "
                    "so that a large validation set fits in memory."
                )
            with torch.no_grad():
                model.eval()
                losses = [
                    ref.window_loss(model, windows[j : j + batch_size]).item()
                    for j in range(0, n_windows, batch_size)
                ]
                model.train()
                in_training = ref.window_loss(model, windows).item()
            model.train(training)
            expected = ref.evaluate(model, windows, batch_size)
            mistakes = {"evaluated in training mode: call model.eval() first": in_training}
            if len(losses) > 1:
                mistakes[
                    "averaged the batches' losses: the last batch is smaller, so weight "
                    "each by its number of windows"
                ] = sum(losses) / len(losses)
                mistakes["scored only the first batch"] = losses[0]
            _number(check, _as_float(check, got, "loss"), expected, "loss", mistakes)
