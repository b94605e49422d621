"""What `make bench` times: the partly fused model computes the reference's function, and the
operations a training step dispatches are counted right (on a GPU, launches)."""

import json

import torch

from course.bench.speed import _sdpa_only_transformer, operations_per_step
from solutions.config import TINY
from solutions.transformer import Transformer


def test_sdpa_only_model_gives_the_outputs_and_gradients_of_the_reference():
    torch.manual_seed(0)
    reference = Transformer(TINY)
    with torch.no_grad():
        for p in reference.parameters():  # biases too, so that a misplaced one shows
            p.normal_(std=0.3)
    partly = _sdpa_only_transformer(TINY)
    partly.load_state_dict(reference.state_dict())
    tokens = torch.randint(TINY.d_vocab, (3, 11))
    out_ref, out_partly = reference(tokens), partly(tokens)
    assert torch.allclose(out_partly, out_ref, atol=1e-5)
    out_ref.square().mean().backward()
    out_partly.square().mean().backward()
    for (name, a), b in zip(reference.named_parameters(), partly.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name


def test_operations_are_counted_without_views_or_allocations():
    x = torch.randn(4, 6)
    assert operations_per_step(lambda x: (x + 1).sum(), x) == 2
    assert operations_per_step(lambda x: x.view(6, 4).t().unsqueeze(0), x) == 0
    assert operations_per_step(lambda x: torch.empty_like(x), x) == 0
    assert operations_per_step(lambda x: x.t().contiguous(), x) == 1  # a copy


def test_a_training_step_clips_and_steps_in_a_few_operations_whatever_the_parameter_count():
    """On a GPU each operation is about one launch: clipping and AdamW as a loop over the
    parameters would cost launches in proportion to their number (38 tensors at TINY)."""
    from solutions.training import ForeachAdamW, clip_grad_norm, param_groups

    model = Transformer(TINY)
    n_params = len(list(model.parameters()))
    model(torch.randint(TINY.d_vocab, (2, 5))).sum().backward()
    optimizer = ForeachAdamW(param_groups(model, 0.1), lr=1e-3)
    optimizer.step()  # the first step also creates the state, m and v, tensor by tensor
    clipping = operations_per_step(lambda m: clip_grad_norm(m.parameters(), 1e-3), model)
    stepping = operations_per_step(lambda _: optimizer.step(), None)
    assert n_params > 30
    assert clipping <= 8, f"clip_grad_norm dispatched {clipping} operations"
    assert stepping <= 2 * 12, f"an AdamW step dispatched {stepping} operations for 2 groups"


def test_the_fused_reference_dispatches_fewer_operations_than_the_explicit_one():
    tokens = torch.randint(TINY.d_vocab, (2, 7))

    def forward_backward(model):
        return lambda t: model(t).square().mean().backward()

    explicit = operations_per_step(forward_backward(Transformer(TINY)), tokens)
    fused = operations_per_step(forward_backward(Transformer(TINY, fused=True)), tokens)
    assert fused < 0.6 * explicit, (fused, explicit)


def test_the_speed_section_records_every_row_and_the_book_finds_the_rows_it_compares(
    monkeypatch,
):
    from course.bench import speed as bench_speed
    from course.bench.records import SPEED_TIMES

    monkeypatch.setattr(torch, "compile", lambda model: model)  # the row, not a compiler
    threads = torch.get_num_threads()
    result = bench_speed.bench_speed(steps=1, threads=threads + 1, cfg=TINY, batch=2)
    assert torch.get_num_threads() == threads, "the bench left PyTorch's threads changed"
    if not torch.cuda.is_available():  # timed with the threads asked for
        assert result["device"] == f"CPU, {threads + 1} threads", result["device"]
    names = [row["name"] for row in result["rows"]]
    assert bench_speed.REFERENCE in names and bench_speed.WITHOUT_B_U in names
    for row in result["rows"]:
        assert row["tokens_per_s"] > 0
        assert ("compile" in row["name"]) == ("operations" not in row), row
    reference = names.index(bench_speed.REFERENCE)
    assert result["rows"][reference]["operations"] < result["rows"][0]["operations"]
    stored = json.loads(SPEED_TIMES["cpu"].read_text(encoding="utf-8"))
    stored_names = [row["name"] for row in stored["rows"]]
    for name in [bench_speed.REFERENCE, bench_speed.WITHOUT_B_U, bench_speed.NANOGPT]:
        assert name in stored_names, f"chapter 6b compares {name!r}: rerun the bench, --record"
    assert set(names) <= set(stored_names), "a row the stored run lacks: rerun with --record"
