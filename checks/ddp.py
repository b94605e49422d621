"""The checkers of chapter 6b's data-parallel training (solutions/ddp.py): its two ways to take one batch in pieces: averaging gradients over
processes (run in two real gloo processes, forked from this one) and accumulating them over
micro-batches in one process. Both are held to one process's gradient on the whole batch."""

import torch

from checks._core import _learner_line, exercise, seeded
from checks.training._common import SMALL, _as_float, _model, _number
from solutions import ddp as ref
from solutions.training import window_loss

__all__ = ["check_average_gradients", "check_accumulate_gradients"]

# --- Averaging over processes ------------------------------------------------------------------

WORLD = 2


def _grads(model) -> dict[str, torch.Tensor | None]:
    return {
        name: None if p.grad is None else p.grad.detach().clone()
        for name, p in model.named_parameters()
    }


def _local_grads(case: dict, rank: int, world: int):
    """The model of a case with this rank's share of the batch backpropagated."""
    model = _model(case["seed"])
    for name in case["frozen"]:
        model.get_parameter(name).requires_grad_(False)
    window_loss(model, case["batch"].chunk(world)[rank]).backward()
    return model


def _on_rank(learner, cases):
    """What each forked rank runs: every case's local backward, then the learner's code."""

    def run(rank: int, world: int) -> list[dict]:
        results = []
        for case in cases:
            model = _local_grads(case, rank, world)
            try:
                learner(model)
            except NotImplementedError:
                return results + [{"not_implemented": True}]
            except Exception as error:  # noqa: BLE001 (reported to the learner by the parent)
                raised = f"{type(error).__name__}: {error}{_learner_line(error)}"
                return results + [{"raised": raised}]
            results.append({"grads": _grads(model)})
        return results

    return run


AVERAGING_CASES = [
    {"seed": 110, "batch_size": 6, "frozen": []},
    # A parameter without a gradient (frozen): p.grad is None there, and stays None.
    {"seed": 111, "batch_size": 4, "frozen": ["embed.W_E"]},
]


@exercise(ref.average_gradients)
def check_average_gradients(check, average_gradients):
    cases = []
    for i, spec in enumerate(AVERAGING_CASES):
        batch = torch.randint(
            SMALL.d_vocab, (spec["batch_size"], SMALL.n_ctx + 1), generator=seeded(120 + i)
        )
        cases.append(spec | {"batch": batch})
    try:
        per_rank = ref.run_on_ranks(_on_rank(average_gradients, cases), WORLD, timeout=30.0)
    except TimeoutError:
        check.fail(
            "the two processes did not finish: every rank must make the same collective calls "
            "(dist.all_reduce) in the same order, or the others wait for it forever."
        )
    except RuntimeError as error:
        check.fail(f"the two processes could not run: {str(error)[-600:]}")
    for i, case in enumerate(cases):
        frozen = f", {case['frozen'][0]} frozen" if case["frozen"] else ""
        with check.case(
            f"{WORLD} processes (gloo), each with {case['batch_size'] // WORLD} of a batch "
            f"of {case['batch_size']} windows{frozen}"
        ):
            for rank, results in enumerate(per_rank):
                if len(results) <= i:
                    break  # the learner's code raised earlier: reported there
                result = results[i]
                if result.get("not_implemented"):
                    check.not_implemented = True
                    check.fail(
                        "average_gradients is not implemented yet: replace `raise "
                        "NotImplementedError` with your code."
                    )
                if "raised" in result:
                    raised = result["raised"]
                    if "gloo" in raised:  # the other rank left a collective call unanswered
                        raised += (
                            "\n  Every rank must make the same collective calls (all_reduce), "
                            "in the same order: a call only some ranks make is never answered."
                        )
                    check.fail(f"your average_gradients raised, on rank {rank}, {raised}")
                _compare_averaged(check, case, rank, result["grads"])


def _compare_averaged(check, case, rank: int, got: dict) -> None:
    whole = _model(case["seed"])
    for name in case["frozen"]:
        whole.get_parameter(name).requires_grad_(False)
    window_loss(whole, case["batch"]).backward()
    expected = _grads(whole)
    local = [_grads(_local_grads(case, r, WORLD)) for r in range(WORLD)]
    for name, want in expected.items():
        theirs = got.get(name)
        if want is None:
            if theirs is not None:
                check.fail(
                    f"{name} had no gradient (p.grad is None: it is frozen) and came back with "
                    "one: skip the parameters whose p.grad is None."
                )
            continue
        if theirs is None:
            check.fail(f"the gradient of {name} is gone (p.grad is None): average it in place.")
        own = local[rank][name]
        summed = sum(grads[name] for grads in local)
        check.tensor(
            theirs,
            want,
            what=f"gradient of {name} on rank {rank}",
            mistakes={
                "summed over the ranks but did not divide: all_reduce sums, so divide by "
                "dist.get_world_size() to get the mean": summed,
                "left the rank's own gradient, of its own share of the batch: all_reduce "
                "every parameter's gradient over the ranks (and divide by their number), "
                "this one included": own,
                "divided by the number of ranks without summing over them first "
                "(dist.all_reduce works in place: call it on p.grad itself)": own / WORLD,
                f"divided by the number of ranks twice ({WORLD}² in all)": summed / WORLD**2,
            },
            rtol=1e-5,
            atol=1e-7,
        )


# --- Accumulation over micro-batches -----------------------------------------------------------


def _accumulated(model, micro_batches, weights, zero: bool = False) -> float:
    """Backpropagate each micro-batch's mean loss times its weight, the gradients zeroed
    before each one if `zero`; return the sum of the weighted losses."""
    loss = 0.0
    for batch, weight in zip(micro_batches, weights, strict=True):
        if zero:
            model.zero_grad(set_to_none=True)
        part = window_loss(model, batch) * weight
        part.backward()
        loss += part.item()
    return loss


def _flat_grads(check, model, what: str) -> torch.Tensor:
    grads = []
    for name, p in model.named_parameters():
        if p.grad is None:
            check.fail(
                f"{what}: {name} has no gradient (p.grad is None): backpropagate every "
                "micro-batch's loss, and leave the gradients in p.grad."
            )
        grads.append(p.grad.detach().flatten())
    return torch.cat(grads)


@exercise(ref.accumulate_gradients)
def check_accumulate_gradients(check, accumulate_gradients):
    for i, sizes in enumerate([(3, 3), (2, 2, 2), (4, 2, 1), (5,)]):
        with check.case(f"micro-batches of {', '.join(map(str, sizes))} windows"):
            gen = seeded(130 + i)
            batches = [
                torch.randint(SMALL.d_vocab, (n, SMALL.n_ctx + 1), generator=gen) for n in sizes
            ]
            whole = _model(140 + i)
            loss = window_loss(whole, torch.cat(batches))
            loss.backward()
            theirs = _model(140 + i)
            got = check.call(accumulate_gradients, theirs, list(batches))
            k, shares = len(sizes), [n / sum(sizes) for n in sizes]
            undivided = (
                "did not divide: each micro-batch's loss is a mean over its own windows, so "
                "summing them counts the batch once per micro-batch"
            )
            zeroed = (
                "zeroed the gradients between micro-batches, so only the last one counts: "
                "backward() adds into p.grad, which is what accumulation needs"
            )
            variants = {undivided: ([1.0] * k, False), zeroed: (shares, True)}
            if len(set(sizes)) > 1:
                variants[
                    "divided every micro-batch's loss by the number of micro-batches: with "
                    "micro-batches of different sizes that weights a window of a small one "
                    "more than one of a large one; weight each by its share of the windows"
                ] = ([1 / k] * k, False)
            mistakes, losses = {}, {}
            for mistake, (weights, zero) in variants.items():
                model = _model(140 + i)
                losses[mistake] = _accumulated(model, batches, weights, zero)
                mistakes[mistake] = torch.cat([p.grad.flatten() for p in model.parameters()])
            check.tensor(
                _flat_grads(check, theirs, "after your accumulate_gradients"),
                torch.cat([p.grad.flatten() for p in whole.parameters()]),
                what="accumulated gradients",
                mistakes=mistakes,
                rtol=1e-5,
                atol=1e-7,
            )
            if isinstance(got, torch.Tensor) and got.requires_grad:
                check.fail("return the loss as a Python float (loss.item()), not a tensor.")
            _number(check, _as_float(check, got, "loss"), loss.item(), "loss", losses)
