"""Chapter 6b's checkers of the two ways to split a batch: gradients averaged over two real
gloo processes, and gradients accumulated over micro-batches. Each accepts the reference and
another correct way of writing it, and names the mistakes learners make."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from checks import ddp as checks
from solutions import ddp as ref
from support import assert_accepts, assert_rejects

# --- Averaging over processes ------------------------------------------------------------------


def test_average_gradients_accepts_the_reference_and_divide_then_sum(capsys):
    assert_accepts(checks.check_average_gradients, ref.average_gradients, capsys)

    def divide_then_sum(model):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        for g in grads:
            g.div_(dist.get_world_size())
            dist.all_reduce(g)

    assert_accepts(checks.check_average_gradients, divide_then_sum, capsys)

    def with_avg(model):  # gloo has no ReduceOp.AVG: one flat tensor, summed, then divided
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    assert_accepts(checks.check_average_gradients, with_avg, capsys)


def summed(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


def some(model):  # the matrices only
    for name, p in model.named_parameters():
        if p.grad is not None and ".W_" in f".{name.rsplit('.', 1)[-1]}":
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def divided_only(model):
    for p in model.parameters():
        if p.grad is not None:
            p.grad = p.grad / dist.get_world_size()
            dist.all_reduce(p.grad / 1)  # a copy: the sum lands nowhere


def one_rank_only(model):
    if dist.get_rank() == 0:
        dist.all_reduce(next(model.parameters()).grad)


def none_grads(model):
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= 2


def test_average_gradients_names_the_mistakes():
    assert_rejects(checks.check_average_gradients, summed, "did not divide")
    assert_rejects(checks.check_average_gradients, some, "blocks.0.ln1.w", "rank's own gradient")
    assert_rejects(checks.check_average_gradients, divided_only, "without summing")
    assert_rejects(checks.check_average_gradients, one_rank_only, "same collective calls")
    assert_rejects(checks.check_average_gradients, none_grads, "frozen", "raised")


def test_average_gradients_answers_in_a_few_seconds():
    import time

    start = time.perf_counter()
    checks.check_average_gradients(ref.average_gradients)
    # It takes about a second; 10 s leave room for a busy machine.
    assert time.perf_counter() - start < 10


# --- Accumulation over micro-batches -----------------------------------------------------------


def test_accumulate_gradients_accepts_the_reference_and_a_summed_loss(capsys):
    assert_accepts(checks.check_accumulate_gradients, ref.accumulate_gradients, capsys)

    def summed_then_divided(model, micro_batches):
        n_predictions = sum(b[:, 1:].numel() for b in micro_batches)
        total = 0.0
        for b in micro_batches:
            logits = model(b[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), b[:, 1:].flatten(), reduction="sum")
            (loss / n_predictions).backward()
            total += loss.item() / n_predictions
        return total

    assert_accepts(checks.check_accumulate_gradients, summed_then_divided, capsys)


def accumulate(*, divide="share", zero=False):
    def accumulate_gradients(model, micro_batches):
        total, loss_sum = sum(len(b) for b in micro_batches), 0.0
        for b in micro_batches:
            if zero:
                model.zero_grad()
            weight = {"share": len(b) / total, "count": 1 / len(micro_batches), "none": 1.0}
            loss = ref.window_loss(model, b) * weight[divide]
            loss.backward()
            loss_sum += loss.item()
        return loss_sum

    return accumulate_gradients


def test_accumulate_gradients_names_the_mistakes():
    check = checks.check_accumulate_gradients
    assert_rejects(check, accumulate(divide="none"), "did not divide")
    assert_rejects(check, accumulate(divide="count"), "4, 2, 1", "share of the windows")
    assert_rejects(check, accumulate(zero=True), "only the last one counts")
