"""The checkers of chapter 6b's checkpoints: a run stopped, saved, loaded into a fresh model
and resumed must end where a straight run ends."""

import tempfile
from pathlib import Path

import torch

from checks._core import exercise, seeded
from checks.training._common import SMALL, _model
from solutions import training as ref

# --- Checkpoints -------------------------------------------------------------------------------

RESUME = ref.TrainConfig(max_steps=6, warmup_steps=2, max_lr=1e-2, min_lr=1e-3, batch_size=3)
STOP = 3
TOKENS = torch.randint(SMALL.d_vocab, (400,), generator=seeded(90))


def _run(model, optimizer, generator, start: int, stop: int) -> None:
    for step in range(start, stop):
        batch = ref.random_windows(TOKENS, RESUME.batch_size, SMALL.n_ctx, generator)
        ref.train_step(model, optimizer, batch, ref.learning_rate(step, RESUME), 1.0)


def _fresh(seed: int):
    model = _model(seed)
    optimizer = ref.AdamW(ref.param_groups(model, 0.1), betas=(0.9, 0.95))
    return model, optimizer, torch.Generator().manual_seed(RESUME.seed)


def _resume(check, save, load, who: str) -> None:
    """Stop a run at STOP, save, load into a fresh model (other weights, a fresh optimizer,
    the generator seeded anew) and go on: it must end where a straight run ends."""
    straight = _fresh(100)
    _run(*straight, 0, RESUME.max_steps)
    stopped = _fresh(100)
    _run(*stopped, 0, STOP)
    log = [{"step": s} for s in range(1, STOP + 1)]
    resumed = _fresh(101)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        if who == "save":
            check.call(lambda: save(path, *stopped, STOP, log=log), what="save_checkpoint")
            if not path.exists():
                check.fail("nothing was written at `path`: torch.save(state, path).")
            keys = torch.load(path, weights_only=False)
            need = {"model", "optimizer", "generator", "step"}
            if not isinstance(keys, dict) or not need <= set(keys):
                found = sorted(keys) if isinstance(keys, dict) else type(keys).__name__
                check.fail(
                    f"the checkpoint should be a dict with the keys {sorted(need)} "
                    f"(load_checkpoint reads them), found {found}."
                )
            try:
                state = ref.load_checkpoint(path, *resumed)
            except Exception as error:
                check.fail(
                    f"load_checkpoint could not read your checkpoint: "
                    f"{type(error).__name__}: {error}. Save model.state_dict(), "
                    "optimizer.state_dict() and generator.get_state()."
                )
        else:
            ref.save_checkpoint(path, *stopped, STOP, log=log)
            state = check.call(lambda: load(path, *resumed), what="load_checkpoint")
            if not isinstance(state, dict) or "step" not in state:
                check.fail(
                    "return the checkpoint, a dict whose 'step' is where the run "
                    "stopped (and with the extras, such as 'log')."
                )
    verb = "saved" if who == "save" else "restored"
    model, optimizer, generator = resumed
    if not all(
        torch.equal(a, b) for a, b in zip(model.parameters(), stopped[0].parameters(), strict=True)
    ):
        check.fail(
            f"the model's weights were not {verb}: model.state_dict() "
            f"{'into the checkpoint' if who == 'save' else 'back with load_state_dict'}."
        )
    theirs, ours = optimizer.state_dict()["state"], stopped[1].state_dict()["state"]
    if len(theirs) != len(ours) or any(
        theirs[k]["step"] != ours[k]["step"] or not torch.equal(theirs[k]["m"], ours[k]["m"])
        for k in ours
    ):
        check.fail(
            f"the optimizer's state was not {verb}: AdamW's m, v and step count per "
            "parameter. Without them the resumed AdamW starts afresh (m = v = 0, bias "
            "correction from step 1) and takes other steps than the run it resumes."
        )
    if not torch.equal(generator.get_state(), stopped[2].get_state()):
        check.fail(
            f"the generator's state was not {verb}: generator.get_state() and "
            "set_state(...). Seeded anew, the resumed run draws the batches the run "
            "already trained on, not the ones it would have drawn next."
        )
    if state.get("step") != STOP:
        check.fail(
            f"the checkpoint's step is {state.get('step')!r}, the run stopped after "
            f"step {STOP}: the schedule goes on from there."
        )
    if state.get("log") != log:
        check.fail(
            "the extra keyword arguments (here log=...) were not kept in the "
            "checkpoint: the loop saves its log and best weights that way."
        )
    _run(*resumed, state["step"], RESUME.max_steps)
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    check.tensor(
        flat(resumed[0]), flat(straight[0]), what="parameters at the end of the resumed run"
    )


@exercise(ref.save_checkpoint)
def check_save_checkpoint(check, save_checkpoint):
    with check.case(f"a run stopped after step {STOP} of {RESUME.max_steps}, then resumed"):
        _resume(check, save_checkpoint, ref.load_checkpoint, "save")


@exercise(ref.load_checkpoint)
def check_load_checkpoint(check, load_checkpoint):
    with check.case(f"a run stopped after step {STOP} of {RESUME.max_steps}, then resumed"):
        _resume(check, ref.save_checkpoint, load_checkpoint, "load")
