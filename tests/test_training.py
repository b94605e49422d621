"""The training loop (solutions/training.py): seeded data, schedule, weight-decay groups,
determinism, exact resume; and the shipped course model (course/models/course_model.py)."""

import csv
import json
from dataclasses import replace

import pytest
import torch

from course.models.course_model import load_course_model
from course.models.train_course_model import write_log
from solutions.config import TINY
from solutions.training import (
    TrainConfig,
    evaluate,
    fixed_windows,
    learning_rate,
    param_groups,
    random_windows,
    train,
)
from solutions.transformer import Transformer

CFG = TINY.but(n_ctx=16)
TCFG = TrainConfig(
    batch_size=4, max_steps=20, warmup_steps=5, eval_every=5, eval_windows=8, patience=0
)


def tokens(n: int, seed: int) -> torch.Tensor:
    """A token stream with structure to learn: mostly the previous token plus one."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.where(torch.rand(n, generator=g) < 0.8, 1, torch.randint(0, 7, (n,), generator=g))
    return steps.cumsum(0) % CFG.d_vocab


TRAIN, VAL = tokens(3000, 0), tokens(600, 1)


def run(tmp_path, name, tcfg=TCFG, **kwargs):
    torch.manual_seed(tcfg.seed)
    model = Transformer(CFG)
    log = tmp_path / f"{name}.csv"
    summary = train(model, TRAIN, VAL, tcfg, progress=False, **kwargs)
    write_log(log, summary["log"])
    with open(log) as f:
        return model, summary, list(csv.DictReader(f))


def test_random_windows_are_seeded_slices_of_n_ctx_plus_one():
    a = random_windows(TRAIN, 6, CFG.n_ctx, torch.Generator().manual_seed(4))
    b = random_windows(TRAIN, 6, CFG.n_ctx, torch.Generator().manual_seed(4))
    assert a.shape == (6, CFG.n_ctx + 1) and torch.equal(a, b)
    text = TRAIN.tolist()
    for window in a.tolist():
        assert any(text[s : s + CFG.n_ctx + 1] == window for s in range(len(text)))


def test_fixed_windows_are_the_same_every_time_and_cover_the_split():
    w = fixed_windows(VAL, CFG.n_ctx, 8)
    assert w.shape == (8, CFG.n_ctx + 1)
    assert torch.equal(w[0], VAL[: CFG.n_ctx + 1]) and torch.equal(w[-1], VAL[-CFG.n_ctx - 1 :])
    assert torch.equal(w, fixed_windows(VAL, CFG.n_ctx, 8))


def test_schedule_warms_up_linearly_then_decays_by_a_cosine():
    t = TrainConfig(max_steps=1000, warmup_steps=100, max_lr=1e-3, min_lr=1e-4)
    lrs = [learning_rate(s, t) for s in range(1100)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[49] == pytest.approx(5e-4)
    assert max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) in (99, 100)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))
    midway = (t.max_lr + t.min_lr) / 2
    assert lrs[550] == pytest.approx(midway) and lrs[1000] == lrs[1099] == pytest.approx(1e-4)


def test_weight_decay_only_on_matrices():
    model = Transformer(CFG)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)].rsplit(".", 1)[-1] for p in decay["params"]}
    kept = {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]}
    assert decayed == {"W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U"}
    assert kept == {"w", "b", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U"}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_foreach_adamw_is_adamw_bit_for_bit():
    """Every step, a parameter left without a gradient once, and the checkpointed state."""
    from solutions.training import AdamW, ForeachAdamW, param_groups

    models = [Transformer(TINY) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [
        kind(param_groups(model, 0.1), lr=1e-2, betas=(0.9, 0.95))
        for kind, model in zip([AdamW, ForeachAdamW], models, strict=True)
    ]
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        grads = [torch.randn(p.shape, generator=g) for p in models[0].parameters()]
        for model in models:
            for p, grad in zip(model.parameters(), grads, strict=True):
                p.grad = grad.clone()
            if step == 2:
                model.unembed.b_U.grad = None
        for optimizer in optimizers:
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)
    states = [optimizer.state_dict()["state"] for optimizer in optimizers]
    assert states[0].keys() == states[1].keys()
    for key, state in states[0].items():
        assert state["step"] == states[1][key]["step"]
        assert torch.equal(state["m"], states[1][key]["m"])
        assert torch.equal(state["v"], states[1][key]["v"])


def test_evaluate_is_deterministic_and_leaves_the_mode_alone():
    model = Transformer(CFG).train()
    windows = fixed_windows(VAL, CFG.n_ctx, 8)
    assert evaluate(model, windows, batch_size=3) == pytest.approx(evaluate(model, windows))
    assert model.training


def test_training_lowers_the_loss_and_logs_every_step(tmp_path):
    _, summary, log = run(tmp_path, "a")
    assert [int(r["step"]) for r in log] == list(range(1, 21))
    assert [r["step"] for r in log if r["val_loss"]] == ["5", "10", "15", "20"]
    assert float(log[-1]["val_loss"]) < float(log[4]["val_loss"]) - 0.5
    assert summary["steps"] == 20 and summary["tokens_seen"] == 20 * 4 * CFG.n_ctx


def test_twenty_steps_from_a_seed_give_the_same_losses_twice(tmp_path):
    model_a, _, log_a = run(tmp_path, "a")
    model_b, _, log_b = run(tmp_path, "b")
    assert log_a == log_b
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_stopped_and_resumed_run_ends_where_a_straight_run_does(tmp_path):
    straight, _, log_straight = run(tmp_path, "straight")
    checkpoint = tmp_path / "ckpt.pt"
    run(tmp_path, "first", checkpoint=checkpoint, stop_at=7)
    resumed, summary, log_resumed = run(tmp_path, "second", checkpoint=checkpoint, resume=True)
    assert summary["steps"] == 20
    assert log_resumed == log_straight
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_early_stopping_keeps_the_best_weights(tmp_path):
    # Validation text counting down where the training text counts up: what the model
    # learns makes validation worse, so the loss turns up and training must stop.
    tcfg = TrainConfig(batch_size=4, max_steps=200, warmup_steps=1, eval_every=2, patience=2)
    torch.manual_seed(0)
    model = Transformer(CFG)
    val = (-VAL) % CFG.d_vocab
    summary = train(model, TRAIN, val, tcfg, progress=False)
    write_log(tmp_path / "log.csv", summary["log"])
    with open(tmp_path / "log.csv") as f:
        evals = [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(f) if r["val_loss"]]
    assert summary["stopped_early"] and summary["steps"] < 200
    best_step, best = min(evals, key=lambda sv: sv[1])
    assert summary["best_step"] == best_step and summary["final_val_loss"] == best
    assert [s for s, _ in evals[-3:]] == [best_step, best_step + 2, best_step + 4]
    assert evaluate(model, fixed_windows(val, CFG.n_ctx, tcfg.eval_windows)) == pytest.approx(best)


@pytest.fixture(scope="module")
def course_model_dir(tmp_path_factory):
    """`make course-model` end to end, at a tiny size, on slices of the reference corpus."""
    from course.models import english
    from course.models.train_course_model import COURSE_TRAINING, main
    from solutions.corpus import load_corpus

    corpus = load_corpus()
    books = {
        "train": (corpus[:120_000], corpus[120_000:200_000]),
        "validation": (corpus[-30_000:],),
    }
    out = tmp_path_factory.mktemp("course_model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(english, "_documents", books.__getitem__)
        tcfg = replace(COURSE_TRAINING, batch_size=4, max_steps=6, warmup_steps=2, eval_every=3)
        main(out, tcfg, TINY.but(d_vocab=300, n_ctx=32))
    return out


def test_course_model_files_load_offline_in_eval_mode(course_model_dir):
    names = {p.name for p in course_model_dir.iterdir()}
    expected = {"model.safetensors", "config.json", "tokenizer.json", "loss_log.csv"}
    assert expected | {"MODEL_CARD.md", "card.json"} <= names
    model, tokenizer = load_course_model(course_model_dir)
    assert not model.training and model.cfg == TINY.but(d_vocab=300, n_ctx=32)
    ids = tokenizer.encode("The cat sat on the mat.")
    assert tokenizer.decode(ids) == "The cat sat on the mat."
    assert model(torch.tensor([ids])).shape == (1, len(ids), 300)


def test_course_model_validation_loss_is_the_cards(course_model_dir):
    from course.models import english
    from course.models.evaluate import model_loss
    from solutions.corpus import load_corpus

    card = json.loads((course_model_dir / "card.json").read_text(encoding="utf-8"))
    model, tokenizer = load_course_model(course_model_dir)
    val = english.encode_documents(tokenizer, [load_corpus()[-30_000:]])
    assert len(val) == card["validation"]["tokens"]
    loss = model_loss(model, val, model.cfg.n_ctx, card["validation"]["batch_size"])
    assert loss == pytest.approx(card["validation"]["model"], abs=1e-4)


def test_missing_course_model_points_at_make(tmp_path):
    with pytest.raises(FileNotFoundError, match="make course-model"):
        load_course_model(tmp_path)
