"""Checkers for chapter 1's embeddings (solutions/embeddings.py): Embed, PosEmbed, Unembed."""

from functools import partial

import torch

from checks._core import CheckFailed, exercise, randomize, scaled, seeded
from course.config import TINY
from solutions import embeddings as ref

__all__ = [
    "check_one_hot",
    "check_embed",
    "check_pos_embed",
    "check_sinusoidal_pos_embed",
    "check_unembed",
]


MID = TINY.but(d_model=64, d_vocab=1000, n_ctx=128)


def _fail_with_hint(check, failure, hint):
    """Fail the case again with a caught verdict's diagnosis and a hint added."""
    check.fail(failure.diagnosis + hint)


def _tokens(cfg, batch, posn, seed, high=None):
    """Random token ids that include 0 and the largest id, where off-by-ones show."""
    high = high or cfg.d_vocab
    tokens = torch.randint(0, high, (batch, posn), generator=seeded(seed))
    tokens.view(-1)[0], tokens.view(-1)[-1] = 0, high - 1
    return tokens


@exercise(ref.one_hot)
def check_one_hot(check, one_hot):
    cases = [
        (torch.tensor([[0, 3, 2]]), 10),
        (_tokens(TINY, 1, 1, 0), TINY.d_vocab),
        (_tokens(TINY, 2, 5, 1), TINY.d_vocab),
        (_tokens(TINY, 3, 32, 2), TINY.d_vocab),
    ]
    for tokens, d_vocab in cases:
        with check.case(f"tokens of shape {tuple(tokens.shape)}, d_vocab = {d_vocab}"):
            got = check.call(one_hot, tokens, d_vocab, what="one_hot")
            if isinstance(got, torch.Tensor) and not got.is_floating_point():
                check.fail(
                    f"the one-hot rows have dtype {got.dtype}: make them float32 "
                    "(.float()) so that they can multiply W_E."
                )
            if (
                isinstance(got, torch.Tensor)
                and got.shape[:-1] == tokens.shape
                and got.shape[-1] != d_vocab
            ):
                check.fail(
                    f"the rows have {got.shape[-1]} entries, expected d_vocab = {d_vocab}: "
                    "pass num_classes=d_vocab (the largest id in a batch is not d_vocab - 1)."
                )
            check.tensor(got, ref.one_hot(tokens, d_vocab), what="one-hot tensor")


def _module_cases(cfg):
    return [(cfg, 1, 1, 10), (cfg, 2, 5, 11), (cfg, 4, cfg.n_ctx, 12), (MID, 3, 17, 13)]


@exercise(ref.Embed)
def check_embed(check, Embed):
    for cfg, batch, posn, seed in _module_cases(TINY):
        with check.case(f"batch {batch}, posn {posn}, d_vocab {cfg.d_vocab}"):
            ours = randomize(ref.Embed(cfg), seed)
            theirs = check.build(Embed, cfg)
            check.load_weights(theirs, ours)
            tokens = _tokens(cfg, batch, posn, seed)
            expected = ours(tokens)
            check.tensor(
                check.call(theirs, tokens, what="Embed.forward"),
                expected,
                what="embedding",
                mistakes={"scaled by sqrt(d_model): GPT-2 does not": expected * cfg.d_model**0.5},
            )


def _check_broadcast(check, got, batch, posn, cfg):
    if (
        isinstance(got, torch.Tensor)
        and got.shape in [(posn, cfg.d_model), (1, posn, cfg.d_model)]
        and got.shape != (batch, posn, cfg.d_model)
    ):
        check.fail(
            f"the positional embedding has shape {tuple(got.shape)}, expected "
            f"{(batch, posn, cfg.d_model)}: give every sequence of the batch its copy "
            "(einops.repeat, or .expand)."
        )


@exercise(ref.PosEmbed)
def check_pos_embed(check, PosEmbed):
    cases = [(TINY, 2, 5, 20, TINY.n_ctx), *_module_cases(TINY)]
    for cfg, batch, posn, seed, *high in cases:
        with check.case(f"batch {batch}, posn {posn}"):
            ours = randomize(ref.PosEmbed(cfg), seed)
            theirs = check.build(PosEmbed, cfg)
            check.load_weights(theirs, ours)
            tokens = _tokens(cfg, batch, posn, seed, *high)
            got = check.call(theirs, tokens, what="PosEmbed.forward")
            _check_broadcast(check, got, batch, posn, cfg)
            mistakes = {"scaled by sqrt(d_model)": ours(tokens) * cfg.d_model**0.5}
            if tokens.max() < cfg.n_ctx:
                mistakes[
                    "indexed W_pos by token id: row i of W_pos belongs to position i, "
                    "whatever token sits there"
                ] = ours.W_pos[tokens]
            if posn < cfg.n_ctx:
                mistakes["started at position 1: the first position is 0, so use W_pos[:posn]"] = (
                    ours.W_pos[1 : posn + 1].expand(batch, -1, -1)
                )
            check.tensor(got, ours(tokens), what="positional embedding", mistakes=mistakes)
    with check.case(f"posn = n_ctx + 1 = {TINY.n_ctx + 1}, with cfg.debug on"):
        theirs = check.build(PosEmbed, TINY)
        try:
            out = theirs(_tokens(TINY, 1, TINY.n_ctx + 1, 3))
        except Exception:
            out = None
        if out is not None:
            check.fail(
                f"a sequence of n_ctx + 1 tokens returned a tensor of shape "
                f"{tuple(getattr(out, 'shape', ()))} instead of an error: with cfg.debug on, assert "
                "posn <= self.cfg.n_ctx with a message."
            )


def _sinusoidal(n_ctx, d_model, base=10000.0, swap=False, start=0, exponent=2, halves=False):
    """Sinusoidal encodings with one thing changed, to recognise learners' mistakes."""
    pos = torch.arange(start, start + n_ctx, dtype=torch.float64)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float64)
    angles = pos / base ** (exponent * i / d_model)
    first, second = (angles.cos(), angles.sin()) if swap else (angles.sin(), angles.cos())
    pe = torch.cat([first, second], -1) if halves else torch.stack([first, second], -1)
    return pe.reshape(n_ctx, d_model).float()


@exercise(ref.sinusoidal_pos_embed)
def check_sinusoidal_pos_embed(check, sinusoidal_pos_embed):
    for n_ctx, d_model in [(1, 2), (8, 4), (50, 16), (1024, 768)]:
        with check.case(f"n_ctx {n_ctx}, d_model {d_model}"):
            expected = ref.sinusoidal_pos_embed(n_ctx, d_model)
            got = check.call(sinusoidal_pos_embed, n_ctx, d_model, what="sinusoidal_pos_embed")
            wrong = partial(_sinusoidal, n_ctx, d_model)
            mistakes = {
                "swapped sin and cos: even columns 2i hold sin, odd columns 2i+1 cos": wrong(
                    swap=True
                ),
                "put all the sines first, then all the cosines: interleave them (sin in even "
                "columns, cos in odd ones)": wrong(halves=True),
                "used the column index as 2i: columns 2i and 2i+1 share the frequency "
                "1 / 10000^(2i/d_model), i = 0, 1, ..., d_model/2 - 1": wrong(exponent=4),
                "counted positions from 1: the first position is 0": wrong(start=1),
                "used base 1000: the base is 10000": wrong(base=1000.0),
            }
            # float32 implementations of the same formula differ by ~7e-5 at position 1023;
            # every mistake above is off by more than 0.1 somewhere.
            try:
                check.tensor(got, expected, what="encoding table", mistakes=mistakes, atol=2e-4)
            except CheckFailed as failure:
                if (
                    isinstance(got, torch.Tensor)
                    and got.shape == expected.shape
                    and d_model > 2
                    and torch.allclose(got[:, :2], expected[:, :2], atol=2e-4)
                ):
                    _fail_with_hint(
                        check,
                        failure,
                        "\n  Columns 0 and 1 (frequency 1) are right, later ones are not: "
                        "check the frequencies 1 / 10000^(2i/d_model).",
                    )
                raise


@exercise(ref.Unembed)
def check_unembed(check, Unembed):
    square = TINY.but(d_vocab=TINY.d_model)  # a square W_U, so a transposed one still runs
    cases = [
        (square, 2, 5, 30, 1.0),
        *[c + (1.0,) for c in _module_cases(TINY)],
        (TINY, 2, 7, 31, 1e-3),
        (TINY, 2, 7, 32, 1e3),
    ]
    for cfg, batch, posn, seed, scale in cases:
        with check.case(
            f"batch {batch}, posn {posn}, d_vocab {cfg.d_vocab}" + scaled("residual", scale)
        ):
            ours = randomize(ref.Unembed(cfg), seed)
            theirs = check.build(Unembed, cfg)
            check.load_weights(theirs, ours)
            residual = torch.randn(batch, posn, cfg.d_model, generator=seeded(seed)) * scale
            expected = ours(residual)
            return_logits = ": return the logits themselves"
            mistakes = {
                "returned probabilities (softmax)" + return_logits: expected.softmax(-1),
                "returned log-probabilities (log_softmax)" + return_logits: expected.log_softmax(
                    -1
                ),
                "forgot the bias b_U": expected - ours.b_U,
            }
            if cfg.d_vocab == cfg.d_model:
                mistakes["used W_U transposed: it is [d_model, d_vocab], so residual @ W_U"] = (
                    residual @ ours.W_U.T + ours.b_U
                )
            got = check.call(theirs, residual, what="Unembed.forward")
            check.tensor(got, expected, what="logits tensor", mistakes=mistakes)
